"""The Lua scripts of the Redis limit store: each check or debit is one atomic EVALSHA.

KEYS: the request bucket, the token bucket and the daily totals of one API key (one hash tag, so they
share a cluster slot). ARGV: requests per minute, tokens per minute, tokens per day, USD per day (0 = off),
then seconds added to the server clock (0 in service; tests move the day boundary with it); RECORD adds
the tokens and USD to debit. Time is the Redis server's (TIME), so replicas with skewed clocks agree.
A bucket hash is {level, ts}; an absent bucket is full, so it expires when it would be full again.
Numbers travel as strings: Redis would truncate a Lua number reply to an integer.
"""

from __future__ import annotations

_PRELUDE = """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens_per_day, usd_per_day = tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000 + tonumber(ARGV[5])
local DAY = 86400
local day = math.floor(now / DAY)
local until_tomorrow = DAY - (now - day * DAY)

local function num(x)
  return string.format('%.17g', x)
end

local function bucket_level(key, per_minute)
  local stored = redis.call('HMGET', key, 'level', 'ts')
  if not stored[1] then
    return per_minute
  end
  local elapsed = math.max(0, now - tonumber(stored[2]))
  return math.min(per_minute, tonumber(stored[1]) + elapsed * per_minute / 60)
end

local function bucket_store(key, per_minute, level)
  redis.call('HSET', key, 'level', num(level), 'ts', num(now))
  redis.call('EXPIRE', key, math.ceil((per_minute - level) * 60 / per_minute) + 1)
end

local function daily_usage()
  local stored = redis.call('HMGET', KEYS[3], 'day', 'tokens', 'usd')
  if tonumber(stored[1]) ~= day then
    return 0, 0
  end
  return tonumber(stored[2]) or 0, tonumber(stored[3]) or 0
end
"""

# Returns {} when admitted (one request taken), else {limit, retry_after_s, used}.
ADMIT = (
    _PRELUDE
    + """
if tokens_per_day > 0 or usd_per_day > 0 then
  local tokens, usd = daily_usage()
  if tokens_per_day > 0 and tokens >= tokens_per_day then
    return {'tokens_per_day', num(until_tomorrow), num(tokens)}
  end
  if usd_per_day > 0 and usd >= usd_per_day then
    return {'usd_per_day', num(until_tomorrow), num(usd)}
  end
end
if tpm > 0 then
  local level = bucket_level(KEYS[2], tpm)
  if level < 1 then
    return {'tokens_per_minute', num((1 - level) * 60 / tpm), '0'}
  end
end
if rpm > 0 then
  local level = bucket_level(KEYS[1], rpm)
  if level < 1 then
    return {'requests_per_minute', num((1 - level) * 60 / rpm), '0'}
  end
  bucket_store(KEYS[1], rpm, level - 1)
end
return {}
"""
)

# ARGV[6], ARGV[7]: the tokens and USD a finished request used. The token bucket may go into deficit.
RECORD = (
    _PRELUDE
    + """
local tokens, usd = tonumber(ARGV[6]), tonumber(ARGV[7])
if tpm > 0 and tokens > 0 then
  bucket_store(KEYS[2], tpm, bucket_level(KEYS[2], tpm) - tokens)
end
if tokens_per_day > 0 or usd_per_day > 0 then
  local used_tokens, used_usd = daily_usage()
  redis.call('HSET', KEYS[3], 'day', num(day), 'tokens', num(used_tokens + tokens),
    'usd', num(used_usd + usd))
  redis.call('EXPIRE', KEYS[3], math.ceil(until_tomorrow) + 1)
end
return 1
"""
)
