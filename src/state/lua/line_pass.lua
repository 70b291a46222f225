-- Passes of a shared line. KEYS: line, passes, resv, revoked, revlog.
-- ARGV[1] = 'enter': a pass without a ticket (safety_net while nobody waits, or
--   passthrough): ARGV id, session ms, active_users (0: no limit), whether the line
--   must be empty (1/0). Returns 1 when let in, 0 when not.
-- ARGV[1] = 'keep': pass ARGV[2] lives until now + ARGV[3] ms (registered when this
--   instance first sees it; renewals never shorten it). Returns 0 if it was revoked.
-- ARGV[1] = 'revoke': pass ARGV[2] ends; copies refused for ARGV[3] ms. Returns the
--   revocation generation (instances apply the log's entries after theirs).
-- ARGV[4] (keep) / ARGV[6] (enter): most passes tracked (the oldest go beyond).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local function bound(max)
  local over = redis.call('ZCARD', KEYS[2]) - tonumber(max)
  if over > 0 then redis.call('ZPOPMIN', KEYS[2], over) end
end
if op == 'enter' then
  local limit = tonumber(ARGV[4])
  if ARGV[5] == '1' then
    local h = redis.call('HMGET', KEYS[1], 'next', 'front', 'pn', 'sn')
    if not h[3] then return 0 end
    if tonumber(h[2]) < tonumber(h[4]) + tonumber(h[1]) - 1 then return 0 end
  end
  if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) >= limit then return 0 end
  end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
  bound(ARGV[6])
  return 1
elseif op == 'keep' then
  if redis.call('ZSCORE', KEYS[4], ARGV[2]) then return 0 end
  redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[3]), ARGV[2])
  bound(ARGV[4])
  return 1
elseif op == 'revoke' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[3]), ARGV[2])
  local gen = redis.call('HINCRBY', KEYS[1], 'revgen', 1)
  redis.call('RPUSH', KEYS[5], gen .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
  redis.call('LTRIM', KEYS[5], -1000, -1)
  return gen
end
return redis.error_reply('unknown op ' .. tostring(op))
