//! The shared backend: one Lua script per decision, atomic on the Redis server, timed by the
//! server's own clock (`TIME`) so instances' clocks do not matter.
//!
//! The arithmetic mirrors `quota.rs` in microseconds (integers below 2^53, exact in Lua's
//! doubles). Like the local store, a request under several limits is all-or-nothing: the
//! script decides every limit first and writes only if all allow it.

use std::{sync::LazyLock, time::Duration};

use portcullis_redis::{Redis, Unavailable};
use redis::Script;

use crate::{
    local::Verdict,
    quota::{Algorithm, Outcome, Quota},
};

/// Numbers written back go through `string.format('%.0f')`: Lua's own number-to-string
/// conversion keeps 14 digits, and microsecond timestamps have 16.
/// KEYS: one state key per limit. ARGV[1]: cost; ARGV[2]: units to lease (0: none); then per
/// limit: algorithm (1 GCRA, 2 sliding window), period (µs), limit, burst.
/// Returns the units granted (the lease, the cost, or 0 when refused), then {allowed,
/// remaining, reset µs, retry-after µs} per limit, flattened.
const LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])

local function decide(cost)
  local out = {}
  local writes = {}
  local all = true
  for i = 1, #KEYS do
    local key = KEYS[i]
    local base = 2 + (i - 1) * 4
    local algorithm = tonumber(ARGV[base + 1])
    local period = tonumber(ARGV[base + 2])
    local limit = tonumber(ARGV[base + 3])
    local burst = tonumber(ARGV[base + 4])
    local allowed, remaining, reset, retry
    if algorithm == 1 then
      local interval = math.max(1, math.floor(period / limit))
      local tolerance = interval * burst
      local tat = tonumber(redis.call('GET', key))
      if tat == nil or tat < now then tat = now end
      local new_tat = tat + interval * cost
      if new_tat - now <= tolerance then
        allowed, remaining, reset, retry = 1, math.floor((tolerance - (new_tat - now)) / interval), new_tat - now, 0
        writes[i] = function()
          redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
        end
      else
        allowed, remaining, reset, retry = 0, math.floor(math.max(0, tolerance - (tat - now)) / interval), tat - now, new_tat - tolerance - now
      end
    else
      local index = math.floor(now / period)
      local elapsed = now - index * period
      local h = redis.call('HMGET', key, 'i', 'c', 'p')
      local stored = tonumber(h[1])
      local current, previous = 0, 0
      if stored == index then
        current, previous = tonumber(h[2]) or 0, tonumber(h[3]) or 0
      elseif stored == index - 1 then
        previous = tonumber(h[2]) or 0
      end
      local weighted = previous * (period - elapsed) / period + current
      reset = period - elapsed
      if weighted + cost <= limit then
        allowed, remaining, retry = 1, math.floor(limit - weighted - cost), 0
        writes[i] = function()
          redis.call('HSET', key, 'i', string.format('%.0f', index), 'c', current + cost, 'p', previous)
          redis.call('PEXPIRE', key, math.floor(2 * period / 1000) + 1)
        end
      else
        allowed, remaining = 0, math.floor(math.max(0, limit - weighted))
        if current + cost <= limit and previous > 0 then
          local at = period * (1 - (limit - cost - current) / previous)
          retry = math.max(1, math.ceil(at) - elapsed)
        elseif cost <= limit then
          local at = 0
          if current > 0 then at = period * (1 - (limit - cost) / current) end
          retry = (period - elapsed) + math.ceil(at)
        else
          retry = 4503599627370496
        end
      end
    end
    if allowed == 0 then all = false end
    out[#out + 1] = allowed
    out[#out + 1] = remaining
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  return out, writes, all
end

local function commit(writes)
  for _, write in pairs(writes) do write() end
end

-- A lease takes `lease` units at once while they are all available; near the limit the
-- request's own cost is decided alone, so decisions there stay exact.
if lease > cost then
  local out, writes, all = decide(lease)
  if all then
    commit(writes)
    table.insert(out, 1, lease)
    return out
  end
end
local out, writes, all = decide(cost)
local granted = 0
if all then
  commit(writes)
  granted = cost
end
table.insert(out, 1, granted)
return out
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LUA));

/// Decides on Redis: `keys[i]` holds the state of `quotas[i]`. With `lease` above `cost`, takes
/// `lease` units at once when all are available. Returns the verdict and the units granted.
pub(crate) async fn decide(
    redis: &Redis,
    keys: &[String],
    quotas: &[&Quota],
    cost: u64,
    lease: u64,
) -> Result<(Verdict, u64), Unavailable> {
    let mut args: Vec<u64> = Vec::with_capacity(2 + quotas.len() * 4);
    args.push(cost);
    args.push(lease);
    for q in quotas {
        args.push(match q.algorithm {
            Algorithm::Gcra => 1,
            Algorithm::SlidingWindow => 2,
        });
        args.push(u64::try_from(q.rate.period.as_micros()).unwrap_or(u64::MAX));
        args.push(q.rate.limit);
        args.push(q.burst);
    }
    let flat: Vec<i64> = redis.run_script("rate_limit", &SCRIPT, keys, &args).await?;
    let granted = flat
        .first()
        .map_or(0, |g| u64::try_from(*g).unwrap_or_default());
    let mut verdict = None;
    for (rule, (chunk, quota)) in flat[1.min(flat.len())..]
        .chunks_exact(4)
        .zip(quotas)
        .enumerate()
    {
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or_default());
        let outcome = Outcome {
            allowed: chunk[0] == 1,
            limit: quota.rate.limit,
            remaining: u64::try_from(chunk[1]).unwrap_or_default(),
            reset: micros(chunk[2]),
            retry_after: micros(chunk[3]),
        };
        verdict = Some(Verdict::fold(verdict, rule, outcome));
    }
    verdict.map(|v| (v, granted)).ok_or_else(|| {
        Unavailable::Failed(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "rate limit script returned no decisions",
        )))
    })
}
