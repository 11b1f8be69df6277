// Command loadgen is the gRPC load generator of bench/online.py's `--loadgen raw`
// (which builds it with `go build`). It sends one pre-serialized request with a
// pass-through codec (no message encoding or decoding), so that its own CPU cost stays
// small, for a duration from a number of concurrent callers over a number of
// connections, then prints one JSON line: completed calls ("count"), failed calls by
// status code ("errors"), "qps", latency percentiles "p50", "p99", "p999" in ms, and its
// CPU use in cores ("cpu"). `-cacert` connects over TLS; `-token` sends a bearer token
// on every call.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	addr := flag.String("addr", "127.0.0.1:6566", "server address")
	method := flag.String("method", "/skewless.v1.OnlineService/GetOnlineFeatures", "full method")
	dataFile := flag.String("data", "", "file holding the serialized request")
	concurrency := flag.Int("c", 1, "concurrent callers")
	conns := flag.Int("conns", 1, "connections")
	duration := flag.Duration("d", 3*time.Second, "duration")
	caFile := flag.String("cacert", "", "PEM CA of the server: connect over TLS")
	token := flag.String("token", "", "bearer token sent with every call")
	flag.Parse()
	transport := insecure.NewCredentials()
	if *caFile != "" {
		tlsCreds, err := credentials.NewClientTLSFromFile(*caFile, "")
		if err != nil {
			panic(err)
		}
		transport = tlsCreds
	}
	base := context.Background()
	if *token != "" {
		base = metadata.AppendToOutgoingContext(base, "authorization", "Bearer "+*token)
	}
	req, err := os.ReadFile(*dataFile)
	if err != nil {
		panic(err)
	}
	clients := make([]*grpc.ClientConn, *conns)
	for i := range clients {
		clients[i], err = grpc.Dial(*addr,
			grpc.WithTransportCredentials(transport),
			grpc.WithDefaultCallOptions(
				grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			panic(err)
		}
	}
	var mu sync.Mutex
	latencies := make([]time.Duration, 0, 1<<16)
	errors := map[string]int{}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			conn := clients[w%len(clients)]
			local := make([]time.Duration, 0, 1024)
			localErr := map[string]int{}
			var resp []byte
			for time.Now().Before(deadline) {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(base, 10*time.Second)
				err := conn.Invoke(ctx, *method, &req, &resp)
				cancel()
				if err != nil {
					localErr[status.Code(err).String()]++
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			for k, v := range localErr {
				errors[k] += v
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	wall := time.Since(start).Seconds()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := float64(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / 1e9
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return -1
		}
		i := int(p * float64(len(latencies)))
		if i >= len(latencies) {
			i = len(latencies) - 1
		}
		return float64(latencies[i].Microseconds()) / 1000
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"count": len(latencies), "errors": errors, "qps": float64(len(latencies)) / wall,
		"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "cpu": cpu / wall,
	})
}
