package redistest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-sched/pulse/internal/redisproc"
)

// ClusterOptions sets up a Redis Cluster. The zero value means three masters
// with one replica each.
type ClusterOptions struct {
	// Masters is the number of masters. Default 3, the minimum of
	// redis-cli --cluster create.
	Masters int
	// ReplicasPerMaster is the number of replicas of each master. Default 1;
	// negative means none.
	ReplicasPerMaster int
	// NodeTimeout is cluster-node-timeout: how long a master may be
	// unreachable before its replica is promoted. Default 1s.
	NodeTimeout time.Duration
}

// Cluster is a Redis Cluster of redis-server processes owned by one test.
type Cluster struct {
	t     testing.TB
	nodes []*redisproc.Server
}

// clusterReadyTimeout bounds how long a new cluster may take to serve every
// slot with every replica in sync, and how long a failover may take.
const clusterReadyTimeout = 30 * time.Second

// StartCluster starts a Redis Cluster on loopback ports and stops it at the
// end of the test. Each node needs a second port, its own plus 10000, for the
// cluster bus.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.ReplicasPerMaster == 0 {
		opts.ReplicasPerMaster = 1
	} else if opts.ReplicasPerMaster < 0 {
		opts.ReplicasPerMaster = 0
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = time.Second
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redistest: redis-cli is not installed: %v (install it with apt-get install redis-tools)", err)
	}

	c := &Cluster{t: t}
	t.Cleanup(c.stopAll)
	total := opts.Masters * (1 + opts.ReplicasPerMaster)
	for i := 0; i < total; i++ {
		node, err := startClusterNode(t.TempDir(), opts.NodeTimeout)
		if err != nil {
			t.Fatalf("redistest: start cluster node %d: %v", i, err)
		}
		c.nodes = append(c.nodes, node)
	}

	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(opts.ReplicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.WaitHealthy(t, clusterReadyTimeout)
	return c
}

// startClusterNode starts one node on a port whose bus port is free too.
func startClusterNode(dir string, nodeTimeout time.Duration) (*redisproc.Server, error) {
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		port := 20000 + rand.IntN(30000)
		if !portFree(port) || !portFree(port+10000) {
			continue
		}
		node, err := redisproc.Start(redisproc.Options{
			Dir:  dir,
			Port: port,
			Args: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
				// Promote a replica however long it was cut off from its
				// master, as tests kill masters on purpose.
				"--cluster-replica-validity-factor", "0",
			},
		})
		if err == nil {
			return node, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("no free port pair found or the node did not start: %v", lastErr)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func (c *Cluster) stopAll() {
	for _, n := range c.nodes {
		n.Stop()
	}
}

// Addrs returns the host:port of every node, killed ones included.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns a redis-cluster:// URL that names every node as a seed.
func (c *Cluster) URL() string {
	return "redis-cluster://" + strings.Join(c.Addrs(), ",")
}

// Client returns a new cluster client, closed at the end of the test.
func (c *Cluster) Client() *redis.ClusterClient {
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { client.Close() })
	return client
}

// MasterOf returns the running master that serves key's slot.
func (c *Cluster) MasterOf(t testing.TB, key string) *redisproc.Server {
	t.Helper()
	slot := c.slotOf(t, key)
	for _, s := range c.shards(t) {
		if slot >= s.start && slot <= s.end {
			for _, n := range c.nodes {
				if n.Addr() == s.master && n.Running() {
					return n
				}
			}
		}
	}
	t.Fatalf("redistest: no running master serves slot %d of key %q", slot, key)
	return nil
}

// Masters returns the running masters.
func (c *Cluster) Masters(t testing.TB) []*redisproc.Server {
	t.Helper()
	seen := map[string]bool{}
	var out []*redisproc.Server
	for _, s := range c.shards(t) {
		if seen[s.master] {
			continue
		}
		seen[s.master] = true
		for _, n := range c.nodes {
			if n.Addr() == s.master && n.Running() {
				out = append(out, n)
			}
		}
	}
	return out
}

// Kill kills a node with SIGKILL.
func (c *Cluster) Kill(node *redisproc.Server) { node.Kill() }

// WaitHealthy waits until every running node reports cluster_state:ok, every
// slot is served by a running master, and every running replica is in sync
// with its master. It fails the test when timeout passes first.
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = c.healthy(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: cluster is not healthy after %s: %v", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) healthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	running := map[string]bool{}
	for _, n := range c.nodes {
		if n.Running() {
			running[n.Addr()] = true
		}
	}
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		client := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		info, err := client.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = fmt.Errorf("%s: cluster_state is not ok", n.Addr())
		}
		var repl string
		if err == nil {
			repl, err = client.Info(ctx, "replication").Result()
		}
		var shards []clusterShard
		if err == nil {
			shards, err = readShards(ctx, client)
		}
		client.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("replica %s is not in sync with its master", n.Addr())
		}
		covered := 0
		for _, s := range shards {
			if !running[s.master] {
				return fmt.Errorf("%s still sees the stopped master %s serving slots %d-%d", n.Addr(), s.master, s.start, s.end)
			}
			covered += s.end - s.start + 1
		}
		if covered != 16384 {
			return fmt.Errorf("%s sees %d of 16384 slots served", n.Addr(), covered)
		}
	}
	return nil
}

// clusterShard is one slot range and the address of its master.
type clusterShard struct {
	start, end int
	master     string
}

// slotOf returns the cluster slot of key, as CLUSTER KEYSLOT computes it.
func (c *Cluster) slotOf(t testing.TB, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		client := redis.NewClient(&redis.Options{Addr: n.Addr()})
		slot, err := client.ClusterKeySlot(ctx, key).Result()
		client.Close()
		if err == nil {
			return int(slot)
		}
	}
	t.Fatal("redistest: no running cluster node returned CLUSTER KEYSLOT")
	return 0
}

func (c *Cluster) shards(t testing.TB) []clusterShard {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		client := redis.NewClient(&redis.Options{Addr: n.Addr()})
		shards, err := readShards(ctx, client)
		client.Close()
		if err == nil {
			return shards
		}
	}
	t.Fatal("redistest: no running cluster node returned CLUSTER SLOTS")
	return nil
}

func readShards(ctx context.Context, client *redis.Client) ([]clusterShard, error) {
	slots, err := client.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, err
	}
	out := make([]clusterShard, 0, len(slots))
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		out = append(out, clusterShard{start: int(s.Start), end: int(s.End), master: s.Nodes[0].Addr})
	}
	return out, nil
}
