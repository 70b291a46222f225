-- Seeds a shared line that Redis does not have (a new room, or a Redis restarted
-- without persistence) from an instance's own last view, or merges back what an
-- instance did while Redis was away. Ticket numbers never go back: next and next2 take
-- the maximum; a line Redis still has keeps its front (it resumes where Redis has it).
-- KEYS: line, granted, redeemed, passes, resv, prered, revoked.
-- ARGV: next, next2, front, pn (-1: not open), sn, perm, atotal, stotal, itotal,
-- granted_from (seeding: places after it up to front may still claim), WINDOW,
-- hold (ms: no admissions until then, so that every instance coming back merges its
-- passes before the front moves on their places; only when seeding or when this
-- merge brings exchanges), number of claimed positions C,
-- then C positions, then (pass id, ms left) pairs.
-- Returns 1 when it seeded, 0 when it merged. A seed starts a new epoch: the other
-- instances see it in their next view and merge their passes and numbers too.
local L = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local W = tonumber(ARGV[11])
local seeded = 0
if redis.call('EXISTS', L) == 0 then
  seeded = 1
  redis.call('HSET', L, 'next', ARGV[1], 'next2', ARGV[2], 'front', ARGV[3], 'tokens', 1,
    'last', now, 'base', now, 'atotal', ARGV[7], 'stotal', ARGV[8], 'itotal', ARGV[9],
    'revgen', 0, 'perm', ARGV[6], 'epoch', now)
  if tonumber(ARGV[4]) >= 0 then
    redis.call('HSET', L, 'pn', ARGV[4], 'sn', ARGV[5])
  end
  redis.call('HSET', L, 'seed_hold', now + tonumber(ARGV[12]))
  for p = tonumber(ARGV[10]) + 1, tonumber(ARGV[3]) do
    redis.call('SETBIT', KEYS[2], p % W, 1)
  end
else
  for i, f in ipairs({'next', 'next2'}) do
    local cur = tonumber(redis.call('HGET', L, f) or 1)
    if tonumber(ARGV[i]) > cur then redis.call('HSET', L, f, ARGV[i]) end
  end
end
local c = tonumber(ARGV[13])
-- A merge that brings no exchanges (a brief flap: this instance let nobody in alone)
-- holds nothing; a seed, or exchanges made alone, hold admissions for the others'.
local hold = now + tonumber(ARGV[12])
if (seeded == 1 or c > 0) and hold > tonumber(redis.call('HGET', L, 'hold') or 0) then
  redis.call('HSET', L, 'hold', hold)
end
local front = tonumber(redis.call('HGET', L, 'front') or 0)
for i = 14, 13 + c do
  local p = tonumber(ARGV[i])
  if p <= front then
    redis.call('SETBIT', KEYS[3], p % W, 1)
    redis.call('ZREM', KEYS[5], p)
  else
    redis.call('ZADD', KEYS[6], p, p)
  end
end
for i = 14 + c, #ARGV - 1, 2 do
  if not redis.call('ZSCORE', KEYS[7], ARGV[i]) then
    redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[i + 1]), ARGV[i])
  end
end
return seeded
