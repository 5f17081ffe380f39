-- An ephemeral event (never stored): KEYS[1] stream, KEYS[2] ephemeral stream;
-- ARGV: maxlen, ttl ms, data[, event]. Returns the anchor: the stream's last id when it was sent.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local anchor = '0-0'
if #last > 0 then anchor = last[1][1] end
local fields = {'a', anchor, 'd', ARGV[3]}
if #ARGV >= 4 then fields[5] = 'e'; fields[6] = ARGV[4] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return anchor
