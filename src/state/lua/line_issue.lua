-- Hands out the next ticket of a shared line (see src/state/redis_line.rs for keys).
-- KEYS: line, prefixes, blocks. ARGV[1]: the client's keyed prefix hash ('' for none),
-- ARGV[2]: most prefixes remembered before opening, ARGV[3]: BLOCK, ARGV[4]: the
-- SECONDARY_BASE of a second pre-queue ticket of one prefix.
-- Returns {ticket, front}, {0} while the line is held after a re-seed (every
-- instance is still reporting the numbers it saw: one handed out now could repeat
-- one of them), or false when the line is not in Redis (seed it, retry).
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(redis.call('HGET', KEYS[1], 'seed_hold') or 0) then return {0} end
local front = tonumber(redis.call('HGET', KEYS[1], 'front') or 0)
redis.call('HINCRBY', KEYS[1], 'itotal', 1)
local pn = redis.call('HGET', KEYS[1], 'pn')
if not pn and ARGV[1] ~= '' then
  if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
    local k = redis.call('HINCRBY', KEYS[1], 'next2', 1) - 1
    return {tonumber(ARGV[4]) + k, front}
  end
  if redis.call('SCARD', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('SADD', KEYS[2], ARGV[1])
  end
end
local ticket = redis.call('HINCRBY', KEYS[1], 'next', 1) - 1
if pn then
  -- Taking a number is presence: the fresh ticket's block is never skipped as
  -- abandoned before its holder could poll (FIFO: position = ticket + sn).
  local sn = tonumber(redis.call('HGET', KEYS[1], 'sn') or 0)
  local b = math.floor((ticket + sn - 1) / tonumber(ARGV[3]))
  redis.call('HSET', KEYS[3], b, now)
end
return {ticket, front}
