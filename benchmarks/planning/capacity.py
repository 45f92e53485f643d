"""Capacity for a request rate and a p95 SLO, from measured per-request stage costs (costs.StageCosts).

Queueing rule (one, stated in the output): the generator pool is M/M/c (Erlang C). A server is one
generator replica (a machine like the measured one, or a GPU); a request's p95 is taken as its measured
unloaded p95 plus the p95 of its wait for a server. The pool gets the fewest servers whose utilisation
is at most `max_utilisation` and whose p95 wait fits in SLO - unloaded p95. When the unloaded p95 alone
exceeds the SLO no server count meets it: the plan says so and sizes for throughput at `max_utilisation`.
The gateway stages (router, embedding, search, privacy) take milliseconds, so their pool is sized at
`max_utilisation` alone.
CPU cost of a stage: its unloaded wall time x the measured machine's cores (the engine and the encoders
use every core of the machine when one request has it alone), an upper bound on CPU-seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from benchmarks.planning.costs import IDEAL_ROUTES, StageCosts

HOURS_PER_MONTH = 730.0
GATEWAY_STAGES = ("route", "embed", "search", "privacy")
GENERATOR_STAGES = ("prefill", "decode")


@dataclass(frozen=True)
class Demand:
    """What one request of an architecture at a mix costs: wall ms by stage, and tokens."""

    stage_ms: dict[str, float]
    prompt_tokens: float
    output_tokens: float
    tail_ratio: float  # measured unloaded p95 / mean latency of the architecture's pipeline

    @property
    def service_ms(self) -> float:
        return sum(self.stage_ms.values())

    @property
    def p95_unloaded_ms(self) -> float:
        return self.service_ms * self.tail_ratio

    @property
    def binding_stage(self) -> str:
        # The stage with the largest share of a request's time uses the most capacity and SLO budget.
        return max(self.stage_ms, key=lambda stage: self.stage_ms[stage])


@dataclass(frozen=True)
class CpuPrices:
    core_hour_usd: float
    generator_machine_hour_usd: float | None  # PriceCard.self_hosted_hour_usd of the generator, if set


@dataclass(frozen=True)
class GpuType:
    name: str
    prefill_tok_s: float
    decode_tok_s: float  # aggregate, at batch_size sequences decoding together
    batch_size: int
    max_concurrent_seqs: int
    usd_per_hour: float | None


@dataclass(frozen=True)
class Plan:
    architecture: str
    hardware: str  # "cpu" or a GPU type's name
    utilisation: float  # of the generator pool
    slo_met: bool
    p95_unloaded_ms: float
    gateway_cores: float
    generator_cores: float  # 0 on a GPU plan
    gateway_replicas: int
    generator_replicas: int  # machines of measured_cores on CPU, GPUs on a GPU plan
    usd_per_month: float | None
    binding_stage: str
    stage_ms: dict[str, float]


def _generation(costs: StageCosts) -> dict[str, float]:
    return {
        "prefill": costs.prompt_tokens * costs.prefill_ms_per_token,
        "decode": costs.decode_steps * costs.decode_ms_per_token,
    }


def demand_of(
    costs: StageCosts, tail_ratio: float, *, routed_to: Mapping[str, StageCosts] | None = None,
    mix: Mapping[str, float] | None = None,
) -> Demand:  # fmt: skip
    """One pipeline's own demand, or, with `routed_to` and `mix`, the hybrid's: every request pays the
    router; each mix class is sent to rag, prompt or refuse at the measured shares (ideal where a class
    was not measured) and pays that pipeline's retrieval and generation."""
    if routed_to is None or mix is None:
        stage_ms = {stage: costs.gateway_ms.get(stage, 0.0) for stage in GATEWAY_STAGES} | _generation(costs)
        return Demand(stage_ms, costs.prompt_tokens, costs.output_tokens, tail_ratio)
    stage_ms = {stage: 0.0 for stage in GATEWAY_STAGES + GENERATOR_STAGES}
    stage_ms["route"] = costs.gateway_ms.get("route", 0.0)
    stage_ms["privacy"] = costs.gateway_ms.get("privacy", 0.0)
    prompt_tokens = output_tokens = 0.0
    routes = costs.routes or {}
    for mix_class, share in mix.items():
        for target, target_share in routes.get(mix_class, IDEAL_ROUTES[mix_class]).items():
            target_costs = routed_to.get(target)
            if target_costs is None:  # refused: the router's cost only
                continue
            weight = share * target_share
            for stage in ("embed", "search"):
                stage_ms[stage] += weight * target_costs.gateway_ms.get(stage, 0.0)
            for stage, ms in _generation(target_costs).items():
                stage_ms[stage] += weight * ms
            prompt_tokens += weight * target_costs.prompt_tokens
            output_tokens += weight * target_costs.output_tokens
    return Demand(stage_ms, prompt_tokens, output_tokens, tail_ratio)


def erlang_c(servers: int, offered: float) -> float:
    """Probability that a request waits in an M/M/c queue with `offered` Erlangs (arrival rate x mean
    service time) on `servers` servers; 1 when the pool is saturated."""
    if offered <= 0:
        return 0.0
    if servers <= offered:
        return 1.0
    blocking = 1.0  # Erlang B by its stable recursion over the server count
    for count in range(1, servers + 1):
        blocking = offered * blocking / (count + offered * blocking)
    return servers * blocking / (servers - offered * (1 - blocking))


def wait_p95_s(servers: int, offered: float, service_s: float) -> float:
    """p95 of the wait in M/M/c: P(wait > t) = C * exp(-(c - a) t / service time)."""
    waiting = erlang_c(servers, offered)
    if waiting <= 0.05:
        return 0.0
    if servers <= offered:
        return math.inf
    return service_s * math.log(waiting / 0.05) / (servers - offered)


def servers_for(
    offered: float, service_s: float, *, wait_budget_s: float, max_utilisation: float, at_least: int = 1
) -> int:
    """The fewest servers at or under `max_utilisation` whose p95 wait fits `wait_budget_s` (which must be
    > 0: the caller decides what to do when the SLO leaves no budget)."""
    servers = max(at_least, _ceil(offered / max_utilisation), 1)
    while wait_p95_s(servers, offered, service_s) > wait_budget_s:
        servers += 1
    return servers


def _ceil(value: float) -> int:
    # Rounding noise (3.0000000001 cores) must not buy a machine.
    return math.ceil(round(value, 9))


def plan_cpu(
    architecture: str, demand: Demand, *, rps: float, slo_ms: float, max_utilisation: float,
    measured_cores: int, batching_gain: float, prices: CpuPrices,
) -> Plan:  # fmt: skip
    """Everything on CPU machines like the measured one (`measured_cores` each)."""
    slo_met = demand.p95_unloaded_ms < slo_ms
    gateway_cpu_s = sum(demand.stage_ms[stage] for stage in GATEWAY_STAGES) / 1000 * measured_cores
    gateway_cores = gateway_cpu_s * rps / max_utilisation
    gateway_replicas = max(1, _ceil(gateway_cores / measured_cores))
    # A generator server is one machine; batching lets it finish `batching_gain` times the requests.
    generator_s = sum(demand.stage_ms[stage] for stage in GENERATOR_STAGES) / 1000 / batching_gain
    offered = rps * generator_s
    generator_replicas = 0
    if offered > 0:
        wait_budget_s = (slo_ms - demand.p95_unloaded_ms) / 1000 if slo_met else math.inf
        generator_replicas = servers_for(
            offered, generator_s, wait_budget_s=wait_budget_s, max_utilisation=max_utilisation
        )
    utilisation = offered / generator_replicas if generator_replicas else max_utilisation
    generator_cores = offered * measured_cores / utilisation if generator_replicas else 0.0
    machine_hour = measured_cores * prices.core_hour_usd
    generator_hour = (
        prices.generator_machine_hour_usd if prices.generator_machine_hour_usd is not None else machine_hour
    )
    usd = (gateway_replicas * machine_hour + generator_replicas * generator_hour) * HOURS_PER_MONTH
    return Plan(
        architecture, "cpu", utilisation, slo_met, demand.p95_unloaded_ms, gateway_cores, generator_cores,
        gateway_replicas, generator_replicas, usd, demand.binding_stage, demand.stage_ms,
    )  # fmt: skip


def plan_gpu(
    architecture: str, demand: Demand, gpu: GpuType, *, rps: float, slo_ms: float, max_utilisation: float,
    measured_cores: int, prices: CpuPrices,
) -> Plan:  # fmt: skip
    """The generator on `gpu` (vLLM figures of a profile), the gateway stages on CPU as measured."""
    per_sequence_decode_tok_s = gpu.decode_tok_s / gpu.batch_size
    stage_ms = {stage: demand.stage_ms[stage] for stage in GATEWAY_STAGES} | {
        "prefill": demand.prompt_tokens / gpu.prefill_tok_s * 1000,
        "decode": demand.output_tokens / per_sequence_decode_tok_s * 1000,
    }
    gpu_demand = Demand(stage_ms, demand.prompt_tokens, demand.output_tokens, demand.tail_ratio)
    slo_met = gpu_demand.p95_unloaded_ms < slo_ms
    gateway_cpu_s = sum(stage_ms[stage] for stage in GATEWAY_STAGES) / 1000 * measured_cores
    gateway_cores = gateway_cpu_s * rps / max_utilisation
    gateway_replicas = max(1, _ceil(gateway_cores / measured_cores))
    # A server is one GPU: GPU-seconds a request at the profile's aggregate throughput, and no more
    # sequences in flight (Little's law) than max_concurrent_seqs per GPU.
    gpu_s = demand.prompt_tokens / gpu.prefill_tok_s + demand.output_tokens / gpu.decode_tok_s
    in_flight = rps * (stage_ms["prefill"] + stage_ms["decode"]) / 1000
    offered = rps * gpu_s
    gpus = 0
    if offered > 0:
        wait_budget_s = (slo_ms - gpu_demand.p95_unloaded_ms) / 1000 if slo_met else math.inf
        gpus = servers_for(
            offered, gpu_s, wait_budget_s=wait_budget_s, max_utilisation=max_utilisation,
            at_least=_ceil(in_flight / gpu.max_concurrent_seqs),
        )  # fmt: skip
    utilisation = offered / gpus if gpus else max_utilisation
    usd: float | None = None
    if gpu.usd_per_hour is not None:
        cpu_hour = gateway_replicas * measured_cores * prices.core_hour_usd
        usd = (cpu_hour + gpus * gpu.usd_per_hour) * HOURS_PER_MONTH
    return Plan(
        architecture, gpu.name, utilisation, slo_met, gpu_demand.p95_unloaded_ms, gateway_cores, 0.0,
        gateway_replicas, gpus, usd, gpu_demand.binding_stage, stage_ms,
    )  # fmt: skip
