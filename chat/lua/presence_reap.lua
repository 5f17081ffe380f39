-- KEYS: presence-rooms. ARGV: prefix -> {room, user id, name, ...} of the people who left
local P, now, out = ARGV[1], now_ms(), {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local z, h = P .. 'presence:' .. room, P .. 'presence-names:' .. room
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    local live, done = {}, {}
    for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do live[who(m) or ''] = true end
    for _, m in ipairs(dead) do
      local u = who(m)
      if u and not live[u] and not done[u] then
        done[u] = true
        out[#out + 1] = room
        out[#out + 1] = u
        out[#out + 1] = redis.call('HGET', h, u) or ''
        redis.call('HDEL', h, u)
        redis.call('HDEL', P .. 'presence-clients:' .. room, u)
      end
    end
  end
  if redis.call('ZCARD', z) == 0 then
    redis.call('SREM', KEYS[1], room)
    redis.call('DEL', h, P .. 'presence-clients:' .. room)
  end
end
return out
