-- KEYS: as _ADD. ARGV: user id, instance, room -> their name if they left for good, else nil
local uid, now = ARGV[1], now_ms()
local removed = redis.call('ZREM', KEYS[1], uid .. ' ' .. ARGV[2])
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  if who(entries[i]) == uid then
    if tonumber(entries[i + 1]) > now then return false end  -- still here through another instance
    removed = removed + redis.call('ZREM', KEYS[1], entries[i])  -- expired: reaped here, not twice
  end
end
if removed == 0 then return false end  -- gone already (reaped): its leave went out then
local name = redis.call('HGET', KEYS[2], uid) or ''
redis.call('HDEL', KEYS[2], uid)
redis.call('HDEL', KEYS[4], uid)
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return name
