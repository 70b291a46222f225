-- Stores purge ARGV[2] under the next generation and publishes it on channel ARGV[1].
-- KEYS[1]: generation counter; KEYS[2]: the log of recent purges (both one hash tag).
-- ARGV[3]: how many purges the log keeps for instances that missed the message.
local gen = redis.call('INCR', KEYS[1])
local entry = gen .. ' ' .. ARGV[2]
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PUBLISH', ARGV[1], 'purge ' .. entry)
return gen
