package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// helperEnv selects the role of the test binary when withpg runs it as CMD.
const helperEnv = "WITHPG_TEST_HELPER"

// TestMain lets the test binary act as the command that withpg runs.
func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "query":
		os.Exit(helperQuery())
	case "print-url":
		fmt.Println(os.Getenv(databaseURLEnv))
		os.Exit(5)
	case "wait-for-signal":
		os.Exit(helperWaitForSignal())
	}
	fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
	os.Exit(100)
}

// helperQuery prints the database URL, checks that it accepts queries and exits with 7.
func helperQuery() int {
	url := os.Getenv(databaseURLEnv)
	fmt.Println(url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 100
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		fmt.Fprintln(os.Stderr, "query:", n, err)
		return 100
	}
	return 7
}

// helperWaitForSignal prints the database URL and exits with 42 when SIGTERM arrives.
func helperWaitForSignal() int {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM)
	fmt.Println(os.Getenv(databaseURLEnv))
	select {
	case <-signals:
		return 42
	case <-time.After(30 * time.Second):
		return 100
	}
}

// buildWithpg builds withpg into a temporary directory.
func buildWithpg(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "withpg")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build withpg: %v\n%s", err, out)
	}
	return bin
}

// withpgCommand returns a command that runs this test binary under withpg in the given helper role.
func withpgCommand(t *testing.T, bin, role string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "--", os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// exitCodeOf returns the exit code in err from cmd.Run or cmd.Wait.
func exitCodeOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("run withpg: %v", err)
	}
	return exitErr.ExitCode()
}

// assertServerGone fails the test when the server at url still accepts connections.
func assertServerGone(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, url); err == nil {
		_ = conn.Close(ctx)
		t.Errorf("connect to %s after withpg exited succeeded, want the cluster removed", url)
	}
}

func TestWithpg(t *testing.T) {
	// Clear the variable so that withpg starts a cluster even when the tests run under withpg.
	t.Setenv(databaseURLEnv, "")
	bin := buildWithpg(t)

	t.Run("ExitCodeAndURL", func(t *testing.T) {
		t.Parallel()
		cmd := withpgCommand(t, bin, "query")
		out, err := cmd.Output()
		if code := exitCodeOf(t, err); code != 7 {
			t.Errorf("exit code = %d, want the command's 7", code)
		}
		url := strings.TrimSpace(string(out))
		if !strings.HasPrefix(url, "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(url, "/postgres?sslmode=disable") {
			t.Fatalf("%s = %q, want the URL of a postgres database on 127.0.0.1", databaseURLEnv, url)
		}
		assertServerGone(t, url)
	})

	t.Run("ForwardsSIGTERM", func(t *testing.T) {
		t.Parallel()
		cmd := withpgCommand(t, bin, "wait-for-signal")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start withpg: %v", err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			_ = cmd.Process.Kill()
			t.Fatalf("read the URL from the command: %v", err)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("send SIGTERM to withpg: %v", err)
		}
		if code := exitCodeOf(t, cmd.Wait()); code != 42 {
			t.Errorf("exit code = %d, want 42, which the command returns on SIGTERM", code)
		}
		assertServerGone(t, strings.TrimSpace(line))
	})

	t.Run("KeepsPresetURL", func(t *testing.T) {
		t.Parallel()
		const preset = "postgres://preset@127.0.0.1:1/x"
		cmd := withpgCommand(t, bin, "print-url", databaseURLEnv+"="+preset)
		out, err := cmd.Output()
		if code := exitCodeOf(t, err); code != 5 {
			t.Errorf("exit code = %d, want the command's 5", code)
		}
		if got := strings.TrimSpace(string(out)); got != preset {
			t.Errorf("%s in the command = %q, want the preset %q", databaseURLEnv, got, preset)
		}
	})

	t.Run("NoCommand", func(t *testing.T) {
		t.Parallel()
		err := exec.Command(bin).Run()
		if code := exitCodeOf(t, err); code != exitSetupFailed {
			t.Errorf("exit code without a command = %d, want %d", code, exitSetupFailed)
		}
	})
}
