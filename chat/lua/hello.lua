-- KEYS: lobby stream. ARGV[2]: hello JSON. The lobby log is never empty: pages need an id.
if redis.call('EXISTS', KEYS[1]) == 0 then sse_append(KEYS[1], ARGV[2], 'hello') end
return 1
