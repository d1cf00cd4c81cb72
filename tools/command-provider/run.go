// Running commands for the stand-in command provider: locally through an
// interpreter, or remotely in an SSH session.

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

type command struct {
	script, stdin, dir string
	env                map[string]string
	interpreter        []string // local only
	logOut, logErr     bool
	log                func(line string)
}

type connection struct {
	host, user, privateKey, privateKeyPassword, password, hostKey string
	port, dialErrorLimit                                          int
	perDialTimeout                                                time.Duration
}

// output collects a stream and hands each complete line to log, if set.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	line []byte
	log  func(string)
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	if o.log != nil {
		o.line = append(o.line, b...)
		for {
			i := bytes.IndexByte(o.line, '\n')
			if i < 0 {
				break
			}
			o.log(string(o.line[:i]))
			o.line = o.line[i+1:]
		}
	}
	return len(b), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.log != nil && len(o.line) > 0 {
		o.log(string(o.line))
		o.line = nil
	}
	return strings.TrimSuffix(o.buf.String(), "\n")
}

func streams(c command) (*output, *output) {
	var out, errOut output
	if c.logOut {
		out.log = c.log
	}
	if c.logErr {
		errOut.log = c.log
	}
	return &out, &errOut
}

// failure is the error of a command that ran and failed: its exit status,
// then what it printed, so that the cause shows up in `pulumi up`.
func failure(status string, stdout, stderr string) error {
	msg := status
	if s := tail(stderr); s != "" {
		msg += ": " + s
	}
	if s := tail(stdout); s != "" {
		msg += "\nstdout: " + s
	}
	return errors.New(msg)
}

func tail(s string) string {
	const max = 8 << 10
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = "..." + s[len(s)-max:]
	}
	return s
}

func runLocal(ctx context.Context, c command) (string, string, error) {
	interp := c.interpreter
	if len(interp) == 0 {
		interp = []string{"/bin/sh", "-c"}
	}
	cmd := exec.CommandContext(ctx, interp[0], append(append([]string{}, interp[1:]...), c.script)...)
	cmd.Dir = c.dir
	cmd.Env = os.Environ()
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if c.stdin != "" {
		cmd.Stdin = strings.NewReader(c.stdin)
	}
	stdout, stderr := streams(c)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	out, errOut := stdout.String(), stderr.String()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out, errOut, nil
	case ctx.Err() != nil:
		return "", "", failure("command cancelled ("+ctx.Err().Error()+")", out, errOut)
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return "", "", failure("Process exited with status "+strconv.Itoa(exit.ExitCode()), out, errOut)
	case errors.As(err, &exit):
		return "", "", failure("Process terminated: "+exit.String(), out, errOut)
	}
	return "", "", fmt.Errorf("could not run %q: %w", interp[0], err)
}

func runRemote(ctx context.Context, c command, conn connection) (string, string, error) {
	client, err := dial(ctx, conn)
	if err != nil {
		return "", "", err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return "", "", fmt.Errorf("ssh: could not open a session on %s: %w", conn.host, err)
	}
	defer session.Close()
	for k, v := range c.env {
		if err := session.Setenv(k, v); err != nil {
			if strings.HasPrefix(k, "PULUMI_COMMAND_") {
				continue // the previous output is a courtesy; most servers refuse it
			}
			return "", "", fmt.Errorf("ssh: the server refused environment variable %s (%w); "+
				"allow it with AcceptEnv in sshd_config, or set it in the command itself", k, err)
		}
	}
	if c.stdin != "" {
		session.Stdin = strings.NewReader(c.stdin)
	}
	stdout, stderr := streams(c)
	session.Stdout, session.Stderr = stdout, stderr

	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = session.Signal(ssh.SIGTERM)
			_ = client.Close()
		case <-done:
		}
	}()
	err = session.Run(c.script)
	out, errOut := stdout.String(), stderr.String()
	var exit *ssh.ExitError
	switch {
	case err == nil:
		return out, errOut, nil
	case ctx.Err() != nil:
		return "", "", failure("command cancelled ("+ctx.Err().Error()+")", out, errOut)
	case errors.As(err, &exit):
		return "", "", failure(exit.Error(), out, errOut) // "Process exited with status N"
	}
	return "", "", failure("ssh: "+err.Error(), out, errOut)
}

// permanent marks handshake errors that another dial would not cure.
type permanent struct{ error }

func dial(ctx context.Context, conn connection) (*ssh.Client, error) {
	if conn.host == "" {
		return nil, errors.New("connection.host is required")
	}
	if conn.port == 0 {
		conn.port = 22
	}
	if conn.user == "" {
		conn.user = "root"
	}
	addr := net.JoinHostPort(conn.host, strconv.Itoa(conn.port))
	// Without a hostKey the server's key is not checked, as the real provider documents.
	config := &ssh.ClientConfig{User: conn.user, HostKeyCallback: ssh.InsecureIgnoreHostKey()}
	if conn.privateKey != "" {
		var signer ssh.Signer
		var err error
		if conn.privateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(conn.privateKey), []byte(conn.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(conn.privateKey))
		}
		if err != nil {
			return nil, fmt.Errorf("connection.privateKey: %w", err)
		}
		config.Auth = append(config.Auth, ssh.PublicKeys(signer))
	}
	if conn.password != "" {
		pw := conn.password
		config.Auth = append(config.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				answers := make([]string, len(qs))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if len(config.Auth) == 0 {
		return nil, errors.New("connection: give privateKey or password (the SSH agent is not supported by this stand-in)")
	}
	if conn.hostKey != "" {
		want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(conn.hostKey))
		if err != nil {
			return nil, fmt.Errorf("connection.hostKey %q is not a public key line: %w", conn.hostKey, err)
		}
		// Ask for the pinned key's type, or the server may show another of its keys.
		config.HostKeyAlgorithms = []string{want.Type()}
		if want.Type() == ssh.KeyAlgoRSA {
			config.HostKeyAlgorithms = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		config.HostKeyCallback = func(_ string, _ net.Addr, got ssh.PublicKey) error {
			if bytes.Equal(got.Marshal(), want.Marshal()) {
				return nil
			}
			return permanent{fmt.Errorf("host key mismatch for %s: the server presented %s %s, but connection.hostKey pins %s %s; refusing to connect",
				addr, got.Type(), ssh.FingerprintSHA256(got), want.Type(), ssh.FingerprintSHA256(want))}
		}
	}

	for attempt := 1; ; attempt++ {
		client, err := handshake(ctx, addr, conn.perDialTimeout, config)
		if err == nil {
			return client, nil
		}
		var perm permanent
		if errors.As(err, &perm) {
			return nil, perm.error
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("ssh: authentication as %q to %s failed: %w", conn.user, addr, err)
		}
		if strings.Contains(err.Error(), "no common algorithm for host key") {
			return nil, fmt.Errorf("host key mismatch for %s: the server has no %v key, which connection.hostKey pins: %w",
				addr, config.HostKeyAlgorithms, err)
		}
		if conn.dialErrorLimit >= 0 && attempt >= conn.dialErrorLimit || ctx.Err() != nil {
			return nil, fmt.Errorf("ssh: could not connect to %s after %d attempt(s) (dialErrorLimit %d): %w",
				addr, attempt, conn.dialErrorLimit, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(min(attempt, 5)) * time.Second):
		}
	}
}

func handshake(ctx context.Context, addr string, timeout time.Duration, config *ssh.ClientConfig) (*ssh.Client, error) {
	dctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if deadline, ok := dctx.Deadline(); ok {
		_ = nc.SetDeadline(deadline)
	}
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, config)
	if err != nil {
		nc.Close()
		var perm permanent
		if errors.As(err, &perm) { // ssh wraps the callback's error; keep it whole
			return nil, perm
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
