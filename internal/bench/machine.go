package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Machine describes the host that ran the benchmark.
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	MemoryBytes int64  `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"go_version"`
}

// LoadAverage is the 1-, 5- and 15-minute load average from /proc/loadavg.
type LoadAverage [3]float64

func (l LoadAverage) String() string {
	return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2])
}

// readMachine reads the host facts from /proc. Facts it cannot read stay
// empty.
func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if v, ok := procField("/proc/cpuinfo", "model name"); ok {
		m.CPUModel = v
	}
	if v, ok := procField("/proc/meminfo", "MemTotal"); ok {
		if kb, err := parseKB(v); err == nil {
			m.MemoryBytes = kb * 1024
		}
	}
	return m
}

// readLoadAverage reads /proc/loadavg; it returns zeros where it cannot.
func readLoadAverage() LoadAverage {
	var l LoadAverage
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	fields := strings.Fields(string(data))
	for i := 0; i < 3 && i < len(fields); i++ {
		l[i], _ = strconv.ParseFloat(fields[i], 64)
	}
	return l
}

// MemoryUse is the memory of a process from /proc/PID/status.
type MemoryUse struct {
	// RSSBytes is VmRSS: the resident set when it was read.
	RSSBytes int64 `json:"rss_bytes"`
	// PeakRSSBytes is VmHWM: the largest resident set so far.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// readMemoryUse reads VmRSS and VmHWM of process pid.
func readMemoryUse(pid int) (MemoryUse, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	var m MemoryUse
	for key, dst := range map[string]*int64{"VmRSS": &m.RSSBytes, "VmHWM": &m.PeakRSSBytes} {
		v, ok := procField(path, key)
		if !ok {
			return m, fmt.Errorf("read %s of process %d: no %s line in %s", key, pid, key, path)
		}
		kb, err := parseKB(v)
		if err != nil {
			return m, fmt.Errorf("read %s of process %d: %w", key, pid, err)
		}
		*dst = kb * 1024
	}
	return m, nil
}

// procField returns the value after "key:" on the first line of a /proc
// file that starts with key.
func procField(path, key string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(name) == key {
			return strings.TrimSpace(value), true
		}
	}
	return "", false
}

// parseKB parses a /proc size such as "123456 kB" into kilobytes.
func parseKB(v string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse size %q: %w", v, err)
	}
	return n, nil
}

// PostgresInfo is the server version and the settings that bear on write
// throughput and notification latency.
type PostgresInfo struct {
	Version  string            `json:"version"`
	Settings map[string]string `json:"settings"`
}

// findPostmaster returns the process id of the server at url, the parent
// of the backend that serves a new connection, or 0 when it cannot tell.
func findPostmaster(ctx context.Context, url string) int {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0
	}
	ppid, ok := parentPID(strconv.Itoa(backend))
	if !ok {
		return 0
	}
	pid, _ := strconv.Atoi(ppid)
	return pid
}

// reportedSettings are the pg_settings names recorded in the results.
var reportedSettings = []string{
	"fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "commit_delay",
	"shared_buffers", "wal_buffers", "max_connections", "max_wal_size", "checkpoint_timeout",
	"wal_level", "autovacuum", "jit", "work_mem",
}

// readPostgresInfo reads the server version and reportedSettings through
// the database at url.
func readPostgresInfo(ctx context.Context, url string) (PostgresInfo, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return PostgresInfo{}, fmt.Errorf("connect to read the server settings: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	info := PostgresInfo{Settings: map[string]string{}}
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&info.Version); err != nil {
		return info, fmt.Errorf("read server_version: %w", err)
	}
	rows, _ := conn.Query(ctx, `SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1)`,
		reportedSettings)
	var name, value string
	_, err = pgx.ForEachRow(rows, []any{&name, &value}, func() error {
		info.Settings[name] = value
		return nil
	})
	if err != nil {
		return info, fmt.Errorf("read pg_settings: %w", err)
	}
	return info, nil
}
