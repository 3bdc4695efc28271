package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicksPerSecond is USER_HZ, the unit of the CPU times in /proc. It
// is 100 on every Linux architecture that Go supports except alpha.
const clockTicksPerSecond = 100

// cpuSample is the CPU time used so far, in clock ticks: by the broker
// processes, by this process (the load generator, and the brokers too in
// process), by the PostgreSQL server's processes, and by the whole
// machine.
type cpuSample struct {
	brokers, self, postgres, machine int64
	ok                               bool
}

// readCPU samples the CPU time of the processes pids, this process, the
// PostgreSQL server whose postmaster is postmaster (0 for none) and the
// machine. The sample is not ok when /proc cannot be read.
func readCPU(pids []int, postmaster int) cpuSample {
	var s cpuSample
	var err error
	if s.machine, err = machineBusyTicks(); err != nil {
		return s
	}
	if s.self, err = processTicks("self"); err != nil {
		return s
	}
	for _, pid := range pids {
		t, err := processTicks(strconv.Itoa(pid))
		if err != nil {
			return s
		}
		s.brokers += t
	}
	if postmaster != 0 {
		s.postgres = processTreeTicks(postmaster)
	}
	s.ok = true
	return s
}

// CPUPerCycle is the machine's busy CPU time per cycle, in milliseconds,
// split in four. The benchmark process runs the callers and the emulator,
// and in process the brokers too. Other work is the rest of the machine.
// PostgreSQL counts only the server processes that ran at both samples, so
// a backend that exits in between counts as other work.
type CPUPerCycle struct {
	BrokerMs   float64 `json:"broker_ms"`
	BenchMs    float64 `json:"bench_ms"`
	PostgresMs float64 `json:"postgres_ms"`
	OtherMs    float64 `json:"other_ms"`
}

// cpuPerCycle returns the CPU time between two samples per cycle, or nil
// when either sample failed or no cycle completed.
func cpuPerCycle(before, after cpuSample, cycles int) *CPUPerCycle {
	if !before.ok || !after.ok || cycles == 0 {
		return nil
	}
	perCycle := func(ticks int64) float64 {
		return round3(float64(ticks) * 1000 / clockTicksPerSecond / float64(cycles))
	}
	brokers, self := after.brokers-before.brokers, after.self-before.self
	postgres := max(after.postgres-before.postgres, 0)
	return &CPUPerCycle{
		BrokerMs:   perCycle(brokers),
		BenchMs:    perCycle(self),
		PostgresMs: perCycle(postgres),
		OtherMs:    perCycle(max(after.machine-before.machine-brokers-self-postgres, 0)),
	}
}

// processTreeTicks returns the CPU time of process pid and its children,
// which for a postmaster are every server process. Processes that exit
// while /proc is read are skipped.
func processTreeTicks(pid int) int64 {
	total, _ := processTicks(strconv.Itoa(pid))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	parent := strconv.Itoa(pid)
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if ppid, ok := parentPID(e.Name()); ok && ppid == parent {
			t, _ := processTicks(e.Name())
			total += t
		}
	}
	return total
}

// parentPID returns field 4 of /proc/<pid>/stat.
func parentPID(pid string) (string, bool) {
	fields, err := statFields(pid)
	if err != nil || len(fields) < 2 {
		return "", false
	}
	return fields[1], true
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name, so that index 0 is field 3 (state). The command name may contain
// spaces, so the fields are counted from its closing parenthesis.
func statFields(pid string) ([]string, error) {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil, err
	}
	rest := string(data)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	return strings.Fields(rest), nil
}

// processTicks returns utime+stime, fields 14 and 15 of /proc/<pid>/stat.
func processTicks(pid string) (int64, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat has %d fields after the command, expected at least 13", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%s/stat: invalid utime %q or stime %q", pid, fields[11], fields[12])
	}
	return utime + stime, nil
}

// machineBusyTicks returns the busy CPU time of all CPUs, from the first
// line of /proc/stat.
func machineBusyTicks() (int64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat starts with %q, expected the cpu line", line)
	}
	var busy int64
	// The columns are user nice system idle iowait irq softirq steal.
	// Idle, iowait and steal (time the hypervisor gave to other machines)
	// are not work done here; guest time is already counted in user and
	// nice.
	for i, f := range fields[1:9] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: invalid value %q", f)
		}
		if i != 3 && i != 4 && i != 7 {
			busy += v
		}
	}
	return busy, nil
}
