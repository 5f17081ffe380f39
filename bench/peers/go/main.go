// The Go peer of the bench: net/http with write coalescing, serving bench.server's contract
// (GET /events, POST /publish {n,size,rate}, GET /stats). Standard library only.
// A goroutine per subscriber drains everything queued for it and writes it in one Write + Flush.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

type sub struct {
	mu     sync.Mutex
	buf    []byte
	notify chan struct{}
}

var (
	mu   sync.Mutex
	subs = map[*sub]struct{}{}
	seq  int64
)

func events(w http.ResponseWriter, r *http.Request) {
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "no flush", 500)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	f.Flush()
	s := &sub{notify: make(chan struct{}, 1)}
	mu.Lock()
	subs[s] = struct{}{}
	mu.Unlock()
	defer func() { mu.Lock(); delete(subs, s); mu.Unlock() }()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.notify:
		}
		s.mu.Lock()
		out := s.buf
		s.buf = nil
		s.mu.Unlock()
		if _, err := w.Write(out); err != nil {
			return
		}
		f.Flush()
	}
}

func publish(w http.ResponseWriter, r *http.Request) {
	var body struct {
		N    int      `json:"n"`
		Size int      `json:"size"`
		Rate *float64 `json:"rate"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"detail":"bad body"}`, 400)
		return
	}
	began := time.Now()
	for i := 0; i < body.N; i++ {
		mu.Lock()
		seq++
		n := seq
		t := float64(time.Now().UnixNano()) / 1e9
		if body.Rate != nil {
			t = float64(began.UnixNano())/1e9 + float64(i)/(*body.Rate)
		}
		head := fmt.Sprintf(`{"seq": %d, "t": %.6f, "pad": "`, n, t)
		pad := body.Size - len(head) - 2
		if pad < 0 {
			pad = 0
		}
		ev := []byte(fmt.Sprintf("id: %d\nevent: tick\ndata: %s%s\"}\n\n", n, head, strings.Repeat("x", pad)))
		for s := range subs {
			s.mu.Lock()
			s.buf = append(s.buf, ev...)
			s.mu.Unlock()
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
		mu.Unlock()
		if body.Rate != nil {
			time.Sleep(time.Until(began.Add(time.Duration(float64(i+1) / *body.Rate * 1e9))))
		}
	}
	mu.Lock()
	fmt.Fprintf(w, `{"published": %d, "seq": %d}`, body.N, seq)
	mu.Unlock()
}

func stats(w http.ResponseWriter, r *http.Request) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	var pages, rss int64
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		fmt.Sscan(string(b), &pages, &rss)
	}
	mu.Lock()
	n, s := len(subs), seq
	mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"subscribers": %d, "rss": %d, "cpu_s": %f, "seq": %d}`, n, rss*int64(os.Getpagesize()), cpu, s)
}

func main() {
	host := flag.String("host", "127.0.0.1", "")
	port := flag.Int("port", 8100, "")
	flag.Parse()
	http.HandleFunc("/events", events)
	http.HandleFunc("/publish", publish)
	http.HandleFunc("/stats", stats)
	if err := http.ListenAndServe(fmt.Sprintf("%s:%d", *host, *port), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
