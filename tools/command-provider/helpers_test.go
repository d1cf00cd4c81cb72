// Test helpers: a real sshd on 127.0.0.1, TCP listeners that misbehave, and a
// provider whose host records what it logs.

package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestMain(m *testing.M) {
	// The developer's agent must not change what the tests see (see TestDeadAgentSocket).
	os.Unsetenv("SSH_AUTH_SOCK")
	os.Exit(m.Run())
}

type sshServer struct {
	host, user string
	port       int
	hostKey    string // the server's public key line
	clientKey  string // a private key it accepts
}

// startSSHD runs /usr/sbin/sshd -D on 127.0.0.1 with a host key of the given
// type (ssh-keygen -t), key-only login for the current user, no AcceptEnv;
// it is stopped by PID when the test ends.
func startSSHD(t *testing.T, keyType string) *sshServer {
	t.Helper()
	const sshd = "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		t.Fatalf("these tests need OpenSSH's sshd (apt-get install openssh-server): %v", err)
	}
	if os.Geteuid() == 0 {
		_ = os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory, as tests/harness/builder.sh makes it
	}
	dir := t.TempDir()
	keygen := func(typ, file string) {
		args := []string{"-q", "-t", typ, "-N", "", "-C", "standin-test", "-f", filepath.Join(dir, file)}
		if typ == "rsa" {
			args = append(args, "-b", "2048")
		}
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	keygen(keyType, "host_key")
	keygen("ed25519", "client")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := &sshServer{host: "127.0.0.1", user: me.Username, port: freePort(t),
		hostKey: strings.TrimSpace(readFile(t, filepath.Join(dir, "host_key.pub"))), clientKey: readFile(t, filepath.Join(dir, "client"))}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(readFile(t, filepath.Join(dir, "client.pub"))), 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s/host_key
PidFile none
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
`, s.port, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// The log goes to a file, not a pipe: sessions the provider never closes outlive the listener.
	logFile := filepath.Join(dir, "sshd.log")
	cmd := exec.Command(sshd, "-D", "-f", filepath.Join(dir, "sshd_config"), "-E", logFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", readFile(t, logFile))
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", net.JoinHostPort(s.host, strconv.Itoa(s.port))); err == nil {
			banner, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(banner, "SSH-2.0-") {
				return s
			}
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited at start-up:\n%s", readFile(t, logFile))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not answer on port %d:\n%s", s.port, readFile(t, logFile))
		}
	}
}

// conn is a connection to the server as the real provider's defaults would fill it in.
func (s *sshServer) conn() connection {
	return connection{host: s.host, port: float64(s.port), user: s.user, privateKey: &s.clientKey,
		hostKey: &s.hostKey, dialErrorLimit: 10, perDialTimeout: 15}
}

// connectionInput is the connection input of a remote Command for the server, its key secret.
func (s *sshServer) connectionInput() resource.PropertyValue {
	return resource.NewObjectProperty(resource.PropertyMap{
		"host":       resource.NewStringProperty(s.host),
		"port":       resource.NewNumberProperty(float64(s.port)),
		"user":       resource.NewStringProperty(s.user),
		"privateKey": resource.MakeSecret(resource.NewStringProperty(s.clientKey)),
		"hostKey":    resource.NewStringProperty(s.hostKey),
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// freePort returns a port on 127.0.0.1 that nothing listens on (connections are refused).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// listener accepts TCP connections on 127.0.0.1 and counts them. With hangUp it
// reads the client's version line and closes; otherwise it never says a word
// and holds each connection until release (or the end of the test).
type listener struct {
	port     int
	accepted atomic.Int32
	mu       sync.Mutex
	held     []net.Conn
}

func listen(t *testing.T, hangUp bool) *listener {
	t.Helper()
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{port: nl.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := nl.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			if hangUp {
				_, _ = bufio.NewReader(c).ReadString('\n')
				c.Close()
				continue
			}
			l.mu.Lock()
			l.held = append(l.held, c)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { nl.Close(); l.release() })
	return l
}

func (l *listener) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.held {
		c.Close()
	}
	l.held = nil
}

func (l *listener) conn() connection {
	return connection{host: "127.0.0.1", port: float64(l.port), user: "root", dialErrorLimit: 10, perDialTimeout: 15}
}

// otherKey is a public key line of a fresh ed25519 key, and the key in OpenSSH PEM.
func otherKey(t *testing.T) (string, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), string(pem.EncodeToMemory(block))
}

// recorder is the engine's host as the provider sees it: it keeps status lines and diagnostics.
type recorder struct {
	mu     sync.Mutex
	status []string
	diags  []string // "severity: message"
}

func (r *recorder) Log(_ context.Context, sev diag.Severity, _ resource.URN, msg string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.diags = append(r.diags, string(sev)+": "+msg)
	return nil
}

func (r *recorder) LogStatus(_ context.Context, _ diag.Severity, _ resource.URN, msg string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = append(r.status, msg)
	return nil
}

func (r *recorder) statusLines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{}, r.status...)
}

func (r *recorder) diagnostics() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{}, r.diags...)
}

func newProvider() (*commandProvider, *recorder) {
	r := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	return &commandProvider{host: r, ctx: ctx, cancel: cancel}, r
}

func urnOf(ty string) string { return "urn:pulumi:test::proj::" + ty + "::cmd" }

func rpcProps(t *testing.T, pm resource.PropertyMap) *structpb.Struct {
	t.Helper()
	s, err := toRPC("test", pm)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func create(t *testing.T, p *commandProvider, ty string, ins resource.PropertyMap, timeout float64) (resource.PropertyMap, error) {
	t.Helper()
	resp, err := p.Create(context.Background(), &pulumirpc.CreateRequest{Urn: urnOf(ty), Properties: rpcProps(t, ins), Timeout: timeout})
	if err != nil {
		return nil, err
	}
	outs, err := fromRPC("outputs", resp.GetProperties())
	if err != nil {
		t.Fatal(err)
	}
	return outs, nil
}

func update(t *testing.T, p *commandProvider, ty string, olds, news resource.PropertyMap) (resource.PropertyMap, error) {
	t.Helper()
	resp, err := p.Update(context.Background(), &pulumirpc.UpdateRequest{Urn: urnOf(ty), Olds: rpcProps(t, olds), News: rpcProps(t, news)})
	if err != nil {
		return nil, err
	}
	outs, err := fromRPC("outputs", resp.GetProperties())
	if err != nil {
		t.Fatal(err)
	}
	return outs, nil
}

func strs(kv ...string) resource.PropertyMap {
	pm := resource.PropertyMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		pm[resource.PropertyKey(kv[i])] = resource.NewStringProperty(kv[i+1])
	}
	return pm
}

func quiet(string) {}
