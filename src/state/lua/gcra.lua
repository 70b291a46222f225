-- One GCRA cell of bucket KEYS[1], on Redis's own clock so that every instance agrees.
-- ARGV[1]: interval between conforming requests, microseconds; ARGV[2]: capacity (cells).
-- Returns {1, remaining} when a cell was spent, {0, wait_us} when refused.
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
local window = interval * capacity
if ahead > window then
  return {0, ahead - window}
end
-- The bucket is full again (and forgettable) once its theoretical arrival time passes.
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor((window - ahead) / interval)}
