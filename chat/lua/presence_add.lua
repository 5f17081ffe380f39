-- KEYS: presence:<room>, presence-names:<room>, presence-rooms, presence-clients:<room>
-- ARGV: user id, instance, name, ttl ms, cap (0: none), room, client address ('': none), cap per
-- address (0: none) -> {1} new | {2} renamed | {0} there | {-1, count} full | {-2, count} address's share
local uid, now, client = ARGV[1], now_ms(), ARGV[7]
local seen, count, present, same = {}, 0, false, 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local u = who(m)
  if u and not seen[u] then
    seen[u] = true
    count = count + 1
    if client ~= '' and redis.call('HGET', KEYS[4], u) == client then same = same + 1 end
  end
  if u == uid then present = true end
end
local cap, client_cap = tonumber(ARGV[5]), tonumber(ARGV[8])
if not present and client ~= '' and client_cap > 0 and same >= client_cap then return {-2, same} end
if not present and cap > 0 and count >= cap then return {-1, count} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), uid .. ' ' .. ARGV[2])
redis.call('SADD', KEYS[3], ARGV[6])
if not present then
  if client ~= '' then redis.call('HSET', KEYS[4], uid, client) else redis.call('HDEL', KEYS[4], uid) end
end
local old = redis.call('HGET', KEYS[2], uid)
redis.call('HSET', KEYS[2], uid, ARGV[3])
if not present then return {1} end
if old ~= ARGV[3] then return {2} end
return {0}
