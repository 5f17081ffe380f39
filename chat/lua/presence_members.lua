-- KEYS: presence:<room>, presence-names:<room> -> {user id, name, ...}
local seen, out = {}, {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms(), '+inf')) do
  local u = who(m)
  if u and not seen[u] then
    seen[u] = true
    out[#out + 1] = u
    out[#out + 1] = redis.call('HGET', KEYS[2], u) or ''
  end
end
return out
