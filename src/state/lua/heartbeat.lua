-- Renews member ARGV[1] in the membership set KEYS[1] and lists the live members
-- (every instance sorts the list the same way, so each knows its rank among N).
-- ARGV[2]: member TTL in milliseconds. Scores are Redis TIME, so clocks agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZRANGE', KEYS[1], 0, -1)
