package bed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// LoadSpec is traffic pushed through the VIP by a process of its own in a
// host's namespace: Conns workers, each opening a fresh connection for every
// GET / and starting the next as soon as the answer is in, and Bulk streams
// downloading GET /bulk (bin/demo-backend streams it until the client goes
// away). It runs for Duration or until stopped.
type LoadSpec struct {
	Target   string        `json:"target"` // host:port of the frontend
	Conns    int           `json:"conns"`
	Bulk     int           `json:"bulk"`
	Duration time.Duration `json:"duration"`
}

// LoadResult is what a load process did.
type LoadResult struct {
	Requests  int64         `json:"requests"`   // GET / answered with 200
	Failed    int64         `json:"failed"`     // requests and bulk streams that failed
	FirstErr  string        `json:"first_err"`  // the first failure, for the report
	BulkBytes int64         `json:"bulk_bytes"` // received by the bulk streams
	Elapsed   time.Duration `json:"elapsed"`
}

// ConnsPerSecond is the rate of answered requests, each on a new connection.
func (r LoadResult) ConnsPerSecond() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// BulkMBps is the bulk download rate in MB/s (10^6 bytes).
func (r LoadResult) BulkMBps() float64 { return float64(r.BulkBytes) / 1e6 / r.Elapsed.Seconds() }

func (r LoadResult) String() string {
	s := fmt.Sprintf("%.0f new connections/s, bulk %.0f MB/s, %d failed", r.ConnsPerSecond(), r.BulkMBps(), r.Failed)
	if r.FirstErr != "" {
		s += " (first: " + r.FirstErr + ")"
	}
	return s
}

// childEnv carries the job of a test binary re-executed as a bed child
// process (a load or a CPU spinner); see RunChild.
const childEnv = "VIPD_E2E_CHILD"

type childJob struct {
	Load *LoadSpec     `json:"load,omitempty"`
	Spin time.Duration `json:"spin,omitempty"` // spin NumCPU goroutines this long
	Out  string        `json:"out,omitempty"`  // where a load writes its LoadResult
}

// RunChild does the job of a process that StartLoad or StartSpin started
// (the test binary run again with childEnv set) and reports whether this
// process is such a child. The test's TestMain calls it first and, if it
// returns true, exits with code.
func RunChild() (isChild bool, code int) {
	v, ok := os.LookupEnv(childEnv)
	if !ok {
		return false, 0
	}
	var job childJob
	if err := json.Unmarshal([]byte(v), &job); err != nil {
		fmt.Fprintf(os.Stderr, "bed child: %s=%q: %v\n", childEnv, v, err)
		return true, 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch {
	case job.Load != nil:
		res := runLoad(ctx, *job.Load)
		b, _ := json.Marshal(res)
		if err := os.WriteFile(job.Out, b, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "bed child: write result: %v\n", err)
			return true, 1
		}
		fmt.Fprintf(os.Stderr, "load done: %s\n", res)
	case job.Spin > 0:
		spin(ctx, job.Spin)
	default:
		fmt.Fprintf(os.Stderr, "bed child: empty job %q\n", v)
		return true, 2
	}
	return true, 0
}

// loadIOTimeout bounds every request and every bulk read, so a failover
// mid-request counts as a failure instead of stalling a worker.
const loadIOTimeout = 2 * time.Second

func runLoad(ctx context.Context, spec LoadSpec) LoadResult {
	ctx, cancel := context.WithTimeout(ctx, spec.Duration)
	defer cancel()
	var (
		requests, failed, bulk atomic.Int64
		errOnce                sync.Once
		firstErr               string
	)
	fail := func(err error) {
		if ctx.Err() != nil {
			return // cut off by the end of the run, not a failure
		}
		failed.Add(1)
		errOnce.Do(func() { firstErr = err.Error() })
	}
	d := net.Dialer{Timeout: loadIOTimeout, KeepAlive: -1}
	start := time.Now()
	var wg sync.WaitGroup
	for range spec.Conns {
		wg.Go(func() {
			buf := make([]byte, 4096)
			for ctx.Err() == nil {
				if err := getOnce(ctx, &d, spec.Target, buf); err != nil {
					fail(err)
					continue
				}
				requests.Add(1)
			}
		})
	}
	for range spec.Bulk {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for ctx.Err() == nil {
				if err := bulkStream(ctx, &d, spec.Target, buf, &bulk); err != nil {
					fail(err)
					select { // the VIP may be moving: do not spin on refusals
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
		})
	}
	wg.Wait()
	return LoadResult{Requests: requests.Load(), Failed: failed.Load(), FirstErr: firstErr, BulkBytes: bulk.Load(), Elapsed: time.Since(start)}
}

var okStatus = [][]byte{[]byte("HTTP/1.0 200 "), []byte("HTTP/1.1 200 ")}

// getOnce sends GET / on a new connection and reads the answer to its end.
func getOnce(ctx context.Context, d *net.Dialer, target string, buf []byte) error {
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("dial %s: %w", target, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(loadIOTimeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return fmt.Errorf("send GET / to %s: %w", target, err)
	}
	n, head := 0, 0
	for {
		k, err := c.Read(buf[n:])
		n += k
		if head == 0 && n >= len(okStatus[0]) {
			if !bytes.HasPrefix(buf[:n], okStatus[0]) && !bytes.HasPrefix(buf[:n], okStatus[1]) {
				return fmt.Errorf("GET / from %s: answer %.40q", target, buf[:n])
			}
			head = n
		}
		if n == len(buf) {
			n = 0 // only the status line is checked
		}
		if errors.Is(err, io.EOF) {
			if head == 0 {
				return fmt.Errorf("GET / from %s: closed after %d bytes", target, n)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("GET / from %s: %w", target, err)
		}
	}
}

// bulkStream downloads GET /bulk until ctx ends, adding what it receives to
// total.
func bulkStream(ctx context.Context, d *net.Dialer, target string, buf []byte, total *atomic.Int64) error {
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("bulk dial %s: %w", target, err)
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { _ = c.Close() })()
	if _, err := io.WriteString(c, "GET /bulk HTTP/1.0\r\n\r\n"); err != nil {
		return fmt.Errorf("bulk request to %s: %w", target, err)
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(loadIOTimeout))
		n, err := c.Read(buf)
		total.Add(int64(n))
		if err != nil {
			return fmt.Errorf("bulk from %s: %w", target, err)
		}
	}
}

// spin keeps every core busy until d has passed or ctx ends.
func spin(ctx context.Context, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for x := 0; !stop.Load(); x++ {
			}
		})
	}
	<-ctx.Done()
	stop.Store(true)
	wg.Wait()
}

// Load is a running load process.
type Load struct {
	Proc *Proc
	out  string
}

// StartLoad starts a load process in host's namespace, ranked by sched (nil:
// the test's own priority): b.ChildBin, or this test binary run again, with
// the job in its environment.
func (b *Bed) StartLoad(host *Host, name string, spec LoadSpec, sched *Sched) (*Load, error) {
	out := filepath.Join(b.LogDir, name+".json")
	p, err := b.startChild(host, name, sched, childJob{Load: &spec, Out: out})
	if err != nil {
		return nil, err
	}
	return &Load{Proc: p, out: out}, nil
}

// Wait waits up to timeout for the load to end and returns what it did.
func (l *Load) Wait(timeout time.Duration) (LoadResult, error) {
	var r LoadResult
	if err := l.Proc.Wait(timeout); err != nil {
		return r, fmt.Errorf("load %s: %w\n%s", l.Proc.Name, err, l.Proc.Tail(10))
	}
	b, err := os.ReadFile(l.out)
	if err != nil {
		return r, fmt.Errorf("load %s result: %w", l.Proc.Name, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("load %s result %q: %w", l.Proc.Name, b, err)
	}
	return r, nil
}

// StartSpin starts a process in host's namespace that keeps every core busy
// for d, ranked by sched (nil: as the test's own processes).
func (b *Bed) StartSpin(host *Host, name string, d time.Duration, sched *Sched) (*Proc, error) {
	return b.startChild(host, name, sched, childJob{Spin: d})
}

func (b *Bed) startChild(host *Host, name string, sched *Sched, job childJob) (*Proc, error) {
	bin, args := b.ChildBin, []string(nil)
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("child %s: find the test binary: %w", name, err)
		}
		bin, args = self, []string{"-test.run=^$"} // run no test: TestMain's RunChild does the job
	}
	j, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("child %s: %w", name, err)
	}
	return b.StartWith(host, name, ProcOptions{Env: []string{childEnv + "=" + string(j)}, Sched: sched}, append([]string{bin}, args...)...)
}
