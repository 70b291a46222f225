-- One tick of a shared line, run by every instance every TICK: records the blocks
-- its visitors polled, expires passes and reservations, opens the pre-queue at
-- opens_at, and moves the front at the configured rate while there is room. The same
-- state machine as Line::advance (src/waiting_room/state.rs) for FIFO lines, on
-- Redis's clock, so any instance may run it and they all agree.
-- KEYS: line, granted, redeemed, passes, resv, blocks, revlog, prered, prefixes, revoked.
-- ARGV: active_users, new_users_per_minute, abandon_ms, paused (0/1), opens_at
-- (unix ms, '' for none), max_steps, the caller's revocation generation, WINDOW, BLOCK,
-- the next and next2 numbers the caller knows (the line keeps the larger: after a
-- re-seed from an older view, numbers still never go back), then the blocks its
-- visitors polled since its last call.
-- Returns {0} when the line is not in Redis (the caller seeds it), else the view:
-- {1, now, next, next2, front, pn, sn, active, atotal, stotal, itotal, revgen, perm,
--  admitted_now, skipped_now (what this call did: for debugging), epoch, revocations...}.
local L = KEYS[1]
if redis.call('EXISTS', L) == 0 then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local active_users = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 60000
local abandon = tonumber(ARGV[3])
local paused = ARGV[4] == '1'
local W = tonumber(ARGV[8])
local B = tonumber(ARGV[9])
for i = 12, #ARGV do
  redis.call('HSET', KEYS[6], ARGV[i], now)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', now)
local h = redis.call('HMGET', L, 'next', 'next2', 'front', 'tokens', 'last', 'pn', 'sn',
  'base', 'atotal', 'stotal', 'itotal', 'revgen', 'perm', 'hold', 'epoch')
-- Just re-seeded or merged: the other instances' passes are still on their way.
if now < tonumber(h[14] or 0) then paused = true end
local nxt, nxt2, front = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
if tonumber(ARGV[10]) > nxt or tonumber(ARGV[11]) > nxt2 then
  nxt, nxt2 = math.max(nxt, tonumber(ARGV[10])), math.max(nxt2, tonumber(ARGV[11]))
  redis.call('HSET', L, 'next', nxt, 'next2', nxt2)
end
local tokens = tonumber(h[4] or 1)
local last = tonumber(h[5] or now)
local pn, sn = h[6], h[7]
local base = tonumber(h[8] or now)
local atotal, stotal = tonumber(h[9] or 0), tonumber(h[10] or 0)
local dt = math.max(0, now - last)
local admitted_now, skipped_now = 0, 0
local opening = ARGV[5]
if not pn and (opening == '' or now >= tonumber(opening)) then
  -- Opening: the pre-queue is frozen; its order is drawn from the shared key.
  pn, sn, base = nxt - 1, nxt2 - 1, now
  redis.call('HSET', L, 'pn', pn, 'sn', sn, 'base', base)
  redis.call('DEL', KEYS[9])
end
if pn then
  pn, sn = tonumber(pn), tonumber(sn)
  -- At most one tick's worth (or one place) banked, as in Line::admit.
  local cap = math.max(rate * 100, 1)
  tokens = math.min(tokens + rate * dt, cap)
  local active = redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5])
  local last_pos = sn + nxt - 1
  local steps, max_steps = 0, tonumber(ARGV[6])
  local first_block = math.floor(front / B)
  while not paused and steps < max_steps and front < last_pos do
    steps = steps + 1
    local p = front + 1
    local polled = tonumber(redis.call('HGET', KEYS[6], math.floor((p - 1) / B)) or base)
    if polled < base then polled = base end
    if now - polled >= abandon then
      front = p
      redis.call('SETBIT', KEYS[2], p % W, 0)
      redis.call('SETBIT', KEYS[3], p % W, 0)
      skipped_now = skipped_now + 1
    elseif redis.call('ZREM', KEYS[8], p) == 1 then
      -- Claimed on an instance while Redis was away: already inside with a pass.
      front = p
      redis.call('SETBIT', KEYS[2], p % W, 1)
      redis.call('SETBIT', KEYS[3], p % W, 1)
      admitted_now = admitted_now + 1
    elseif tokens >= 1 and active < active_users then
      front = p
      redis.call('SETBIT', KEYS[2], p % W, 1)
      redis.call('SETBIT', KEYS[3], p % W, 0)
      redis.call('ZADD', KEYS[5], now + abandon, p)
      tokens = tokens - 1
      active = active + 1
      admitted_now = admitted_now + 1
    else
      break
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', front)
  -- Presence of blocks the front has passed is never read again.
  for b = first_block, math.floor(front / B) - 1 do
    redis.call('HDEL', KEYS[6], b)
  end
  atotal, stotal = atotal + admitted_now, stotal + skipped_now
  redis.call('HSET', L, 'front', front, 'tokens', tokens, 'atotal', atotal, 'stotal', stotal)
end
redis.call('HSET', L, 'last', math.max(now, last))
local active = redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5])
local revgen = tonumber(h[12] or 0)
local view = {1, now, nxt, nxt2, front, pn or -1, sn or -1, active, atotal, stotal,
  tonumber(h[11] or 0), revgen, h[13] or '', admitted_now, skipped_now, tonumber(h[15] or 0)}
local mine = tonumber(ARGV[7])
if revgen > mine then
  for _, r in ipairs(redis.call('LRANGE', KEYS[7], -math.min(revgen - mine, 1000), -1)) do
    view[#view + 1] = r
  end
end
return view
