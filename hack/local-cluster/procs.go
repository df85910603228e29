package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one long-running process of the cluster. Each runs in its own session (so it
// outlives `up`), logs to logDir/NAME.log and is tracked by runDir/pids/NAME.pid, which
// holds its PID and executable so that `down` never signals a recycled PID.
type daemon struct {
	name string
	path string
	args []string
}

func pidFile(name string) string { return filepath.Join(pidDir(), name+".pid") }

// start launches d detached from the caller.
func start(d daemon) error {
	if pid, ok := running(d.name); ok {
		return fmt.Errorf("%s is already running (pid %d)", d.name, pid)
	}
	logf, err := os.OpenFile(filepath.Join(logDir(), d.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(d.path, d.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", d.name, err)
	}
	exe, err := filepath.EvalSymlinks(d.path)
	if err != nil {
		exe = d.path
	}
	content := fmt.Sprintf("%d\n%s\n", cmd.Process.Pid, exe)
	if err := os.WriteFile(pidFile(d.name), []byte(content), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	// Reap it in the background for as long as this process lives; afterwards init does.
	go func() { _ = cmd.Wait() }()
	return nil
}

// running reports the PID of daemon name when its pid file names a live process that runs
// the recorded executable.
func running(name string) (int, bool) {
	b, err := os.ReadFile(pidFile(name))
	if err != nil {
		return 0, false
	}
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
	pid, err := strconv.Atoi(lines[0])
	if err != nil || len(lines) < 2 {
		return 0, false
	}
	if !alive(pid) {
		return 0, false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return 0, false
	}
	if strings.TrimSuffix(exe, " (deleted)") != lines[1] {
		return 0, false
	}
	return pid, true
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z'
}

// stop sends SIGTERM to daemon name, then SIGKILL after grace, and removes its pid file.
func stop(name string, grace time.Duration) error {
	pid, ok := running(name)
	if !ok {
		_ = os.Remove(pidFile(name))
		return nil
	}
	if err := terminate(pid, grace); err != nil {
		return fmt.Errorf("stopping %s: %w", name, err)
	}
	return os.Remove(pidFile(name))
}

// terminate stops one process: SIGTERM, then SIGKILL after grace.
func terminate(pid int, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for range 50 {
		if !alive(pid) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("pid %d survived SIGKILL", pid)
}

// processesMatching lists the PIDs whose command line contains every one of needles;
// `down` uses it to find containerd shims of this cluster's containerd (and only those).
func processesMatching(needles ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		match := true
		for _, n := range needles {
			if !strings.Contains(cmdline, n) {
				match = false
				break
			}
		}
		if match && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
