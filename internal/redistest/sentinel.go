package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-sched/pulse/internal/redisproc"
)

// SentinelMaster is the name under which the sentinels of StartSentinel
// monitor the master.
const SentinelMaster = "mymaster"

// Sentinel is a master, its replica and three sentinels owned by one test.
type Sentinel struct {
	t         testing.TB
	servers   []*redisproc.Server // the master and the replica, in start order
	sentinels []*redisproc.Server
}

// sentinelReadyTimeout bounds how long the sentinels may take to discover
// the replica and each other, and how long a failover may take.
const sentinelReadyTimeout = 30 * time.Second

// SentinelOptions sets up StartSentinel.
type SentinelOptions struct {
	// MinReplicasToWrite sets min-replicas-to-write on the first master.
	// With 1, it rejects writes as soon as a failover takes its replica
	// away, instead of accepting writes that the new master never receives
	// until a sentinel turns it into a replica, up to 10s later. The replica
	// lacks the setting, so it accepts writes once promoted, before its own
	// new replica has joined.
	MinReplicasToWrite int
}

// StartSentinel starts a master, one replica and three sentinels with quorum
// 2 on loopback ports, waits until the sentinels know the replica and each
// other, and stops them all at the end of the test. A master that stops
// replying for 1s is failed over.
func StartSentinel(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	s := &Sentinel{t: t}
	t.Cleanup(s.stopAll)

	var masterArgs []string
	if opts.MinReplicasToWrite > 0 {
		masterArgs = []string{"--min-replicas-to-write", fmt.Sprint(opts.MinReplicasToWrite), "--min-replicas-max-lag", "10"}
	}
	master, err := redisproc.Start(redisproc.Options{Dir: t.TempDir(), Args: masterArgs})
	if err != nil {
		t.Fatalf("redistest: start master: %v", err)
	}
	s.servers = append(s.servers, master)
	host, port := "127.0.0.1", master.Port()
	replica, err := redisproc.Start(redisproc.Options{
		Dir:  t.TempDir(),
		Args: []string{"--replicaof", host, fmt.Sprint(port)},
	})
	if err != nil {
		t.Fatalf("redistest: start replica: %v", err)
	}
	s.servers = append(s.servers, replica)

	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("sentinel monitor %[1]s %s %d 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 10000\n"+
			"sentinel parallel-syncs %[1]s 1\n", SentinelMaster, host, port)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatalf("redistest: write %s: %v", conf, err)
		}
		sentinel, err := redisproc.Start(redisproc.Options{Dir: dir, Sentinel: true, ConfigFile: conf})
		if err != nil {
			t.Fatalf("redistest: start sentinel %d: %v", i, err)
		}
		s.sentinels = append(s.sentinels, sentinel)
	}
	s.WaitHealthy(t, sentinelReadyTimeout)
	return s
}

func (s *Sentinel) stopAll() {
	for _, p := range s.sentinels {
		p.Stop()
	}
	for _, p := range s.servers {
		p.Stop()
	}
}

// URL returns a redis-sentinel:// URL that names the three sentinels.
func (s *Sentinel) URL() string {
	addrs := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		addrs[i] = p.Addr()
	}
	return "redis-sentinel://" + strings.Join(addrs, ",") + "/0?master=" + SentinelMaster
}

// Client returns a new client that follows the master through the
// sentinels, closed at the end of the test.
func (s *Sentinel) Client() *redis.Client {
	addrs := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		addrs[i] = p.Addr()
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: addrs})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// MasterAddr returns the master's host:port as the first sentinel reports it.
func (s *Sentinel) MasterAddr(t testing.TB) string {
	t.Helper()
	addr, err := s.masterAddr()
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return addr
}

func (s *Sentinel) masterAddr() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0].Addr()})
	defer c.Close()
	hostPort, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil {
		return "", fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME on %s: %w", s.sentinels[0].Addr(), err)
	}
	return hostPort[0] + ":" + hostPort[1], nil
}

// Failover runs SENTINEL FAILOVER and waits until every sentinel reports
// the former replica as master and it reports role master. It returns the new
// master's address. The former master goes on accepting writes until a
// sentinel turns it into a replica, up to 10s later. Use WaitHealthy to wait
// for that.
func (s *Sentinel) Failover(t testing.TB) string {
	t.Helper()
	before := s.MasterAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0].Addr()})
	defer c.Close()
	if err := c.Failover(ctx, SentinelMaster).Err(); err != nil {
		t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}

	deadline := time.Now().Add(sentinelReadyTimeout)
	for {
		after, err := s.promoted(before)
		if err == nil {
			return after
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: failover did not complete within %s: %v", sentinelReadyTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promoted returns the master that every sentinel reports when it is not
// before and reports role master itself.
func (s *Sentinel) promoted(before string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var master string
	for _, p := range s.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: p.Addr()})
		addr, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		c.Close()
		if err != nil {
			return "", fmt.Errorf("sentinel %s: %w", p.Addr(), err)
		}
		this := addr[0] + ":" + addr[1]
		if this == before {
			return "", fmt.Errorf("sentinel %s still reports %s as master", p.Addr(), before)
		}
		if master != "" && this != master {
			return "", fmt.Errorf("sentinels disagree on the master: %s and %s", master, this)
		}
		master = this
	}
	c := redis.NewClient(&redis.Options{Addr: master})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return "", fmt.Errorf("new master %s: %w", master, err)
	}
	if !strings.Contains(info, "role:master") {
		return "", fmt.Errorf("new master %s does not report role master yet", master)
	}
	return master, nil
}

// WaitHealthy waits until every sentinel agrees on the master, lists the
// other two sentinels and the replica, and reports the replica in sync. A
// sentinel promotes only a replica that it reports in sync.
func (s *Sentinel) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := s.healthy(true)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: sentinels are not ready after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// healthy checks the sentinels and the servers. With linkReported, every
// sentinel must also report the replica's link to the master as ok.
func (s *Sentinel) healthy(linkReported bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var master string
	for _, p := range s.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: p.Addr()})
		addr, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
		var replicas, peers []map[string]string
		if err == nil {
			replicas, err = c.Replicas(ctx, SentinelMaster).Result()
		}
		if err == nil {
			peers, err = c.Sentinels(ctx, SentinelMaster).Result()
		}
		c.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", p.Addr(), err)
		}
		this := addr[0] + ":" + addr[1]
		if master != "" && this != master {
			return fmt.Errorf("sentinels disagree on the master: %s and %s", master, this)
		}
		master = this
		if len(peers) != len(s.sentinels)-1 {
			return fmt.Errorf("sentinel %s knows %d other sentinels", p.Addr(), len(peers))
		}
		good := 0
		for _, r := range replicas {
			if strings.Contains(r["flags"], "down") || strings.Contains(r["flags"], "disconnected") {
				continue
			}
			if !linkReported || r["master-link-status"] == "ok" {
				good++
			}
		}
		if good != len(s.servers)-1 {
			return fmt.Errorf("sentinel %s sees %d healthy replicas", p.Addr(), good)
		}
	}

	for _, p := range s.servers {
		if p.Addr() == master {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: p.Addr()})
		info, err := c.Info(ctx, "replication").Result()
		c.Close()
		if err != nil {
			return fmt.Errorf("replica %s: %w", p.Addr(), err)
		}
		if !strings.Contains(info, "master_port:"+strings.Split(master, ":")[1]) || !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica %s is not in sync with %s", p.Addr(), master)
		}
	}
	return nil
}
