-- Exchanges the ticket at position ARGV[1] for pass ARGV[2], once, as Line::claim.
-- KEYS: line, granted, redeemed, passes, resv. ARGV: position, pass id, session ms,
-- active_users, WINDOW.
-- Returns {1} claimed, {0, ahead} still waiting, {2} lost (skipped or forgotten),
-- {3} already redeemed (a replay), {4} the room is full, {-1} no line in Redis.
local L = KEYS[1]
if redis.call('EXISTS', L) == 0 then return {-1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = tonumber(ARGV[1])
local W = tonumber(ARGV[5])
local front = tonumber(redis.call('HGET', L, 'front') or 0)
if p > front then return {0, p - front - 1} end
if front - p >= W or redis.call('GETBIT', KEYS[2], p % W) == 0 then return {2} end
if redis.call('GETBIT', KEYS[3], p % W) == 1 then return {3} end
if redis.call('ZREM', KEYS[5], p) == 0 then
  -- Back after its reservation lapsed: only into a free place.
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  local active = redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5])
  if active >= tonumber(ARGV[4]) then return {4} end
end
redis.call('SETBIT', KEYS[3], p % W, 1)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[2])
return {1}
