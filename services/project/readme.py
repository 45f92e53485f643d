"""The README that `hybridllm init` writes into a project folder."""

from __future__ import annotations

PROJECT_README = """# {org_name}: a hybridllm project

Documents: `{corpus}`. Made by `hybridllm init`; every file here is yours to edit.

| path | what it is |
|---|---|
| `config.yaml` | the service's settings (`--config`); relative paths in it are relative to this folder |
| `templates/*.j2` | the prompts and fixed answers, written for {org_name} |
| `router/source/knowledge.txt` | your own knowledge questions, one per line (starts empty) |
| `router/source/knowledge.workplace.txt` | packaged workplace questions (leave, IT...); delete if off-topic |
| `router/source/direct.txt`, `out_of_scope.txt`, `compose/` | what the router answers directly or refuses |
| `router/*.jsonl`, `router/manifest.json` | router data, rebuilt from the documents and `router/source/` |
| `var/` | built state: the index (`var/index`), the router (`var/router`), converted models |

## Serve

    hybridllm serve --config {root}/config.yaml      # or: make run PROJECT={root}

The first run builds the router data, trains the router and ingests the documents, then serves on
http://127.0.0.1:8000. A later run reuses all of it, and rebuilds only what an edit changed: the
documents, `router/source/`, or the indexing settings.

## Edit

- The refusal: `templates/refusal.j2`, block `answer`. The system prompt: `prompts.system_prompt` in
  `config.yaml`. The organisation's name and description: the `project` section.
- The router: add lines to `router/source/*.txt` (one example per line, `#` starts a comment); the next
  serve rebuilds the data and retrains.
- The evaluation set: `eval/questions.jsonl` (see the hybridllm README, "Your own documents"), scored by
  `hybridllm eval e2e`.
"""
