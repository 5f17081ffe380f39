-- RedisBackend.append (after stream.lua). KEYS[1] stream[, KEYS[2] the epoch key];
-- ARGV: data[, event]. Returns the new id and the epoch it was written in (false if none is set:
-- Redis lost it, and the caller makes one).
local id = sse_append(KEYS[1], ARGV[1], ARGV[2])
local epoch = false
if #KEYS >= 2 then epoch = redis.call('GET', KEYS[2]) end
return {id, epoch}
