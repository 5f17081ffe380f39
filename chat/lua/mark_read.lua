-- KEYS: reads:<uid>. ARGV[2..]: room, message id, ttl ms
mark(KEYS[1], ARGV[2], tonumber(ARGV[3]), ARGV[4])
return 1
