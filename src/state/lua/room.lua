-- Stores a room's settings ARGV[2] under the room's next generation and publishes
-- them on channel ARGV[1]. KEYS[1]: the room's admin hash ({room:NAME} hash tag).
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'settings', ARGV[2])
redis.call('PUBLISH', ARGV[1], 'room ' .. gen .. ' ' .. ARGV[2])
return gen
