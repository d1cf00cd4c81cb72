// Running commands for the stand-in command provider: locally through an
// interpreter, or remotely in an SSH session. README.md says which of the real
// provider's behaviours this imitates, and which it does not.

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"golang.org/x/crypto/ssh"
)

type command struct {
	script, stdin, dir string
	env                map[string]string // the resource's environment
	prev               [][2]string       // PULUMI_COMMAND_STDOUT/STDERR, only those that are non-empty
	interpreter        []string          // local only
	logOut, logErr     bool
	status             func(line string)           // an ephemeral status line on the resource
	report             func(diag.Severity, string) // a diagnostic shown with the resource
}

// connection holds connection's fields as given: a nil pointer is a field that was not set.
type connection struct {
	host, user                                        string
	privateKey, privateKeyPassword, password, hostKey *string
	port                                              float64
	dialErrorLimit, perDialTimeout                    int
}

// stream collects one output stream, adds it to the interleaved text of both
// (all, guarded by mu), and hands each complete line to log, if set.
type stream struct {
	mu   *sync.Mutex
	all  *bytes.Buffer
	own  bytes.Buffer
	line []byte
	log  func(string)
}

func (s *stream) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all.Write(b)
	s.own.Write(b)
	if s.log != nil {
		s.line = append(s.line, b...)
		for i := bytes.IndexByte(s.line, '\n'); i >= 0; i = bytes.IndexByte(s.line, '\n') {
			s.log(string(s.line[:i]))
			s.line = s.line[i+1:]
		}
	}
	return len(b), nil
}

// text logs what is left of the last line and returns the stream's text less one trailing newline.
func (s *stream) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log != nil && len(s.line) > 0 {
		s.log(string(s.line))
		s.line = nil
	}
	return strings.TrimSuffix(s.own.String(), "\n")
}

func streams(c command) (out, errOut *stream, all *bytes.Buffer) {
	mu, all := &sync.Mutex{}, &bytes.Buffer{}
	out, errOut = &stream{mu: mu, all: all}, &stream{mu: mu, all: all}
	if c.logOut {
		out.log = c.status
	}
	if c.logErr {
		errOut.log = c.status
	}
	return out, errOut, all
}

// result is what a run returns: the outputs, or the error in the real
// provider's words, with the command and the whole interleaved output.
func result(err error, script string, out, errOut *stream, all *bytes.Buffer) (string, string, error) {
	stdout, stderr := out.text(), errOut.text()
	if err != nil {
		return "", "", fmt.Errorf("%w: running %q:\n%s", err, script, all.String())
	}
	return stdout, stderr, nil
}

func runLocal(ctx context.Context, c command) (string, string, error) {
	args := append([]string{}, c.interpreter...)
	if len(args) == 0 {
		args = []string{"/bin/sh", "-c"}
	}
	args = append(args, c.script)
	// No WaitDelay and no process group: at the timeout only the interpreter is
	// killed, and Run waits for as long as its children hold stdout or stderr.
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = c.dir // "" is this process's working directory
	cmd.Env = os.Environ()
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for _, kv := range c.prev {
		cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
	}
	if c.stdin != "" {
		cmd.Stdin = strings.NewReader(c.stdin)
	}
	out, errOut, all := streams(c)
	cmd.Stdout, cmd.Stderr = out, errOut
	return result(cmd.Run(), c.script, out, errOut, all)
}

func setenvRefused(k string) string {
	return fmt.Sprintf("Unable to set '%s'. This only works if your SSH server is configured to accept these "+
		"variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command on the remote host, "+
		"you could prefix the command itself with the variables in the form 'VAR=value command'", k)
}

// runRemote uses ctx only while dialing: neither a timeout nor Cancel stops a
// command that runs. The client is never closed, as in the real provider.
func runRemote(ctx context.Context, c command, conn connection) (string, string, error) {
	client, err := dial(ctx, conn, c.status)
	if err != nil {
		return "", "", err
	}
	session, err := client.NewSession()
	if err != nil {
		return "", "", err
	}
	defer session.Close()
	for k, v := range c.env {
		if err := session.Setenv(k, v); err != nil {
			c.report(diag.Error, setenvRefused(k))
			return "", "", fmt.Errorf("could not set environment variable %q: %w", k, err)
		}
	}
	for _, kv := range c.prev {
		if err := session.Setenv(kv[0], kv[1]); err != nil {
			c.report(diag.Warning, setenvRefused(kv[0]))
		}
	}
	if c.stdin != "" {
		session.Stdin = strings.NewReader(c.stdin)
	}
	out, errOut, all := streams(c)
	session.Stdout, session.Stderr = out, errOut
	return result(session.Run(c.script), c.script, out, errOut, all)
}

// dial connects as the real provider does: every failed dial is retried (100
// ms, then ×1.5 up to 5 s) until dialErrorLimit+1 dials have failed, or, with a
// limit of -1 or less, until ctx ends. perDialTimeout bounds the TCP connect
// only; the SSH handshake has no deadline.
func dial(ctx context.Context, conn connection, status func(string)) (*ssh.Client, error) {
	config := &ssh.ClientConfig{
		User:            conn.user,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // no hostKey: not checked, as documented
		Timeout:         time.Duration(conn.perDialTimeout) * time.Second,
	}
	if conn.hostKey != nil {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*conn.hostKey))
		if err != nil {
			return nil, fmt.Errorf("failed to parse host key: %w", err)
		}
		// Only the pinned key's own algorithm: for RSA that is ssh-rsa (SHA-1), which OpenSSH ≥ 8.8 refuses.
		config.HostKeyCallback = ssh.FixedHostKey(key)
		config.HostKeyAlgorithms = []string{key.Type()}
	}
	if conn.privateKey != nil {
		var signer ssh.Signer
		var err error
		if conn.privateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*conn.privateKey), []byte(*conn.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*conn.privateKey))
		}
		if err != nil {
			return nil, err
		}
		config.Auth = append(config.Auth, ssh.PublicKeys(signer))
	}
	if conn.password != nil {
		pw := *conn.password
		config.Auth = append(config.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				answers := make([]string, len(qs))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		// The real provider dials the agent and fails at once when it can't; its keys are not used here.
		agent, err := net.Dial("unix", sock)
		if err != nil {
			return nil, err
		}
		agent.Close()
	}

	addr := net.JoinHostPort(conn.host, strconv.Itoa(int(conn.port)))
	limit := "inf"
	if conn.dialErrorLimit != -1 {
		limit = strconv.Itoa(conn.dialErrorLimit)
	}
	delay := 100 * time.Millisecond
	for try := 0; ; try++ {
		client, err := ssh.Dial("tcp", addr, config)
		if err == nil {
			return client, nil
		}
		if conn.dialErrorLimit > -1 && try+1 > conn.dialErrorLimit {
			return nil, fmt.Errorf("after %d failed attempts: %w", try, err)
		}
		status(fmt.Sprintf("Dial %d/%s failed: retrying", try+1, limit))
		delay = min(delay, 5*time.Second)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		delay = time.Duration(float64(delay) * 1.5)
	}
}
