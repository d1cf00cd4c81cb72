// Command pulumi-resource-command is a small stand-in for the Pulumi command
// provider (github.com/pulumi/pulumi-command) v1.2.1, written for neko-infra's
// offline tests, where the real provider cannot be fetched. It speaks the
// ordinary resource provider protocol, so the real Pulumi engine drives it for
// the @pulumi/command 1.2.1 SDK exactly as it would drive the real one.
//
// It implements only this subset, rejecting anything else in Check:
//
//	command:local:Command   create, update, delete, stdin, triggers, environment,
//	                        dir, interpreter (default ["/bin/sh", "-c"]),
//	                        addPreviousOutputInEnv (default true), logging
//	command:remote:Command  create, update, delete, stdin, triggers, environment,
//	                        addPreviousOutputInEnv, logging, and connection
//	                        {host, port, user, privateKey, privateKeyPassword,
//	                        password, hostKey, dialErrorLimit, perDialTimeout}
//
// Within it, it is meant to be as strict and as careless as the real provider,
// so that a program that passes the tests also works for users: README.md
// lists what that means, and the few behaviours it does not imitate.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	version    = "1.2.1"
	localType  = "command:local:Command"
	remoteType = "command:remote:Command"
)

func main() {
	err := provider.Main("command", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		ctx, cancel := context.WithCancel(context.Background())
		return &commandProvider{host: host, ctx: ctx, cancel: cancel}, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// logger is the part of the engine's host the provider uses (a *provider.HostClient).
type logger interface {
	Log(ctx context.Context, sev diag.Severity, urn resource.URN, msg string) error
	LogStatus(ctx context.Context, sev diag.Severity, urn resource.URN, msg string) error
}

type commandProvider struct {
	pulumirpc.UnimplementedResourceProviderServer
	host   logger
	ctx    context.Context // cancelled by the engine's Cancel
	cancel context.CancelFunc
}

var marshalOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true}

func fromRPC(label string, s *structpb.Struct) (resource.PropertyMap, error) {
	opts := marshalOpts
	opts.Label = label
	return plugin.UnmarshalProperties(s, opts)
}

func toRPC(label string, pm resource.PropertyMap) (*structpb.Struct, error) {
	opts := marshalOpts
	opts.Label = label
	return plugin.MarshalProperties(pm, opts)
}

// --- plugin-level RPCs --------------------------------------------------------

func (p *commandProvider) Handshake(context.Context, *pulumirpc.ProviderHandshakeRequest) (*pulumirpc.ProviderHandshakeResponse, error) {
	return &pulumirpc.ProviderHandshakeResponse{AcceptSecrets: true}, nil
}

func (p *commandProvider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (p *commandProvider) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: `{"name":"command","version":"` + version + `"}`}, nil
}

func (p *commandProvider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *commandProvider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *commandProvider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (p *commandProvider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.cancel()
	return &emptypb.Empty{}, nil
}

// --- resource RPCs ------------------------------------------------------------

var knownKeys = map[string]map[string]bool{
	localType: set("create", "update", "delete", "stdin", "triggers", "environment", "dir",
		"interpreter", "addPreviousOutputInEnv", "logging"),
	remoteType: set("create", "update", "delete", "stdin", "triggers", "environment",
		"addPreviousOutputInEnv", "logging", "connection"),
}

var knownConnectionKeys = set("host", "port", "user", "privateKey", "privateKeyPassword", "password",
	"hostKey", "dialErrorLimit", "perDialTimeout")

func set(keys ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func (p *commandProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	ty := resource.URN(req.GetUrn()).Type().String()
	known, ok := knownKeys[ty]
	if !ok {
		return nil, fmt.Errorf("this stand-in command provider does not implement %s", ty)
	}
	news, err := fromRPC("news", req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	fail := func(prop, format string, args ...any) {
		failures = append(failures, &pulumirpc.CheckFailure{Property: prop, Reason: fmt.Sprintf(format, args...)})
	}
	for k := range news {
		if !known[string(k)] {
			fail(string(k), "%s: %q is not supported by the stand-in command provider used in tests", ty, k)
		}
	}
	if c, ok := news["connection"]; ok {
		if c = plain(c); c.IsObject() {
			conn := c.ObjectValue()
			for k := range conn {
				if !knownConnectionKeys[string(k)] {
					fail("connection."+string(k), "connection.%s is not supported by the stand-in command provider used in tests", k)
				}
			}
			if _, ok := conn["host"]; !ok {
				fail("connection.host", "missing required property 'connection.host'")
			}
			for _, k := range []resource.PropertyKey{"dialErrorLimit", "perDialTimeout"} {
				if v := plain(conn[k]); v.IsNumber() && v.NumberValue() != math.Trunc(v.NumberValue()) {
					fail("connection."+string(k), "connection.%s must be an integer, not %v", k, v.NumberValue())
				}
			}
		}
	}
	if ty == remoteType {
		if _, ok := news["connection"]; !ok {
			fail("connection", "missing required property 'connection'")
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
}

// inputsOf returns the inputs recorded for a resource: old_inputs when the
// engine sends them, else its state less the outputs of the command.
func inputsOf(oldInputs, state *structpb.Struct) (resource.PropertyMap, error) {
	if oldInputs != nil && len(oldInputs.GetFields()) > 0 {
		return fromRPC("oldInputs", oldInputs)
	}
	pm, err := fromRPC("olds", state)
	if err != nil {
		return nil, err
	}
	pm = pm.Copy()
	delete(pm, "stdout")
	delete(pm, "stderr")
	return pm, nil
}

func (p *commandProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, err := inputsOf(req.GetOldInputs(), req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := fromRPC("news", req.GetNews())
	if err != nil {
		return nil, err
	}
	ignored := set(req.GetIgnoreChanges()...)
	keys := map[resource.PropertyKey]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	resp := &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true,
		DetailedDiff: map[string]*pulumirpc.PropertyDiff{}}
	for k := range keys {
		o, hadOld := olds[k]
		n, hasNew := news[k]
		if hadOld && o.IsNull() {
			hadOld = false
		}
		if hasNew && n.IsNull() {
			hasNew = false
		}
		if ignored[string(k)] || (hadOld == hasNew && (!hasNew || (!n.ContainsUnknowns() && o.DeepEquals(n)))) {
			continue
		}
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !hadOld:
			kind = pulumirpc.PropertyDiff_ADD
		case !hasNew:
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if k == "triggers" {
			kind++ // the *_REPLACE variant of each kind
			resp.Replaces = append(resp.Replaces, string(k))
		}
		resp.Diffs = append(resp.Diffs, string(k))
		resp.DetailedDiff[string(k)] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	sort.Strings(resp.Diffs)
	return resp, nil
}

func (p *commandProvider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	urn := resource.URN(req.GetUrn())
	news, err := fromRPC("properties", req.GetProperties())
	if err != nil {
		return nil, err
	}
	outs, err := p.run(ctx, urn, opIf(news, "create"), news, nil, req.GetPreview(), req.GetTimeout())
	if err != nil {
		return nil, err
	}
	id := ""
	if !req.GetPreview() {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		id = urn.Name() + "-" + hex.EncodeToString(b)
	}
	rpcOuts, err := toRPC("outputs", outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: rpcOuts}, nil
}

func (p *commandProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	news, err := fromRPC("news", req.GetNews())
	if err != nil {
		return nil, err
	}
	olds, err := fromRPC("olds", req.GetOlds())
	if err != nil {
		return nil, err
	}
	op := opIf(news, "update")
	if op == "" {
		op = opIf(news, "create")
	}
	outs, err := p.run(ctx, resource.URN(req.GetUrn()), op, news, olds, req.GetPreview(), req.GetTimeout())
	if err != nil {
		return nil, err
	}
	rpcOuts, err := toRPC("outputs", outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: rpcOuts}, nil
}

// Delete runs delete with everything else taken from the state: environment,
// stdin, dir, interpreter, connection, logging and the last outputs.
func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	state, err := fromRPC("properties", req.GetProperties())
	if err != nil {
		return nil, err
	}
	if op := opIf(state, "delete"); op != "" {
		if _, err := p.run(ctx, resource.URN(req.GetUrn()), op, state, state, false, req.GetTimeout()); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

func (p *commandProvider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

// opIf returns op when the inputs give that command (even ""), else "".
func opIf(ins resource.PropertyMap, op resource.PropertyKey) string {
	if _, ok := opt(ins, op); ok {
		return string(op)
	}
	return ""
}

// run runs the command named by op ("create", "update", "delete"; "" runs
// nothing) of a resource with inputs ins; olds, when given, is its previous
// state, whose stdout and stderr are kept when nothing runs and go into the
// environment when non-empty. It returns the new state. stdout and stderr are
// never secret, and logging goes on whatever the inputs hold: as in the real
// provider, only additionalSecretOutputs and logging "none" hide them.
func (p *commandProvider) run(ctx context.Context, urn resource.URN, op string, ins, olds resource.PropertyMap,
	preview bool, timeout float64,
) (resource.PropertyMap, error) {
	outs := ins.Copy()
	outs["stdout"] = resource.NewStringProperty(str(olds, "stdout"))
	outs["stderr"] = resource.NewStringProperty(str(olds, "stderr"))
	if preview {
		computed := resource.MakeComputed(resource.NewStringProperty(""))
		outs["stdout"], outs["stderr"] = computed, computed
		return outs, nil
	}
	if op == "" {
		return outs, nil
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(p.ctx, stop)() // the engine's Cancel
	// Whole seconds, as the real provider's middleware has it: a 0.5 s timeout is over at once.
	if timeout != 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Second*time.Duration(timeout))
		defer cancel()
	}

	c := command{
		script: str(ins, resource.PropertyKey(op)),
		stdin:  str(ins, "stdin"),
		env:    strMap(ins, "environment"),
		dir:    str(ins, "dir"),
		status: func(line string) {
			if p.host != nil {
				_ = p.host.LogStatus(context.Background(), diag.Info, urn, line)
			}
		},
		report: func(sev diag.Severity, msg string) {
			if p.host != nil {
				_ = p.host.Log(context.Background(), sev, urn, msg)
			}
		},
	}
	if boolOr(ins, "addPreviousOutputInEnv", true) {
		for _, k := range []string{"stdout", "stderr"} {
			if v := str(olds, resource.PropertyKey(k)); v != "" {
				c.prev = append(c.prev, [2]string{"PULUMI_COMMAND_" + strings.ToUpper(k), v})
			}
		}
	}
	// Unset: both streams; any value other than these three, "" and "none" too: neither.
	logging, set := opt(ins, "logging")
	c.logOut = !set || logging == "stdout" || logging == "stdoutAndStderr"
	c.logErr = !set || logging == "stderr" || logging == "stdoutAndStderr"

	var stdout, stderr string
	var err error
	if urn.Type().String() == remoteType {
		stdout, stderr, err = runRemote(ctx, c, connectionOf(ins))
	} else {
		c.interpreter = strList(ins, "interpreter")
		stdout, stderr, err = runLocal(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	outs["stdout"] = resource.NewStringProperty(stdout)
	outs["stderr"] = resource.NewStringProperty(stderr)
	return outs, nil
}

// --- property helpers ---------------------------------------------------------

// plain strips secret markers, at every depth.
func plain(v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return plain(v.SecretValue().Element)
	case v.IsArray():
		a := make([]resource.PropertyValue, len(v.ArrayValue()))
		for i, e := range v.ArrayValue() {
			a[i] = plain(e)
		}
		return resource.NewArrayProperty(a)
	case v.IsObject():
		m := resource.PropertyMap{}
		for k, e := range v.ObjectValue() {
			m[k] = plain(e)
		}
		return resource.NewObjectProperty(m)
	}
	return v
}

// opt returns a string property and whether it is set (not absent, not null).
func opt(pm resource.PropertyMap, k resource.PropertyKey) (string, bool) {
	if v := plain(pm[k]); v.IsString() {
		return v.StringValue(), true
	}
	return "", false
}

func str(pm resource.PropertyMap, k resource.PropertyKey) string {
	v, _ := opt(pm, k)
	return v
}

// optp is opt as a pointer: nil when not set.
func optp(pm resource.PropertyMap, k resource.PropertyKey) *string {
	if v, ok := opt(pm, k); ok {
		return &v
	}
	return nil
}

func num(pm resource.PropertyMap, k resource.PropertyKey, def float64) float64 {
	if v := plain(pm[k]); v.IsNumber() {
		return v.NumberValue()
	}
	return def
}

func boolOr(pm resource.PropertyMap, k resource.PropertyKey, def bool) bool {
	if v := plain(pm[k]); v.IsBool() {
		return v.BoolValue()
	}
	return def
}

func strMap(pm resource.PropertyMap, k resource.PropertyKey) map[string]string {
	v := plain(pm[k])
	if !v.IsObject() {
		return nil
	}
	m := map[string]string{}
	for key, e := range v.ObjectValue() {
		if e.IsString() {
			m[string(key)] = e.StringValue()
		}
	}
	return m
}

func strList(pm resource.PropertyMap, k resource.PropertyKey) []string {
	v := plain(pm[k])
	if !v.IsArray() {
		return nil
	}
	var l []string
	for _, e := range v.ArrayValue() {
		if e.IsString() {
			l = append(l, e.StringValue())
		}
	}
	return l
}

// connectionOf takes connection as given, with the real provider's defaults
// for fields that are not set: user root, port 22, dialErrorLimit 10,
// perDialTimeout 15. Nothing is trimmed, and "" is a value like any other.
func connectionOf(pm resource.PropertyMap) connection {
	m := plain(pm["connection"])
	if !m.IsObject() {
		return connection{}
	}
	c := m.ObjectValue()
	user, ok := opt(c, "user")
	if !ok {
		user = "root"
	}
	return connection{
		host:               str(c, "host"),
		port:               num(c, "port", 22),
		user:               user,
		privateKey:         optp(c, "privateKey"),
		privateKeyPassword: optp(c, "privateKeyPassword"),
		password:           optp(c, "password"),
		hostKey:            optp(c, "hostKey"),
		dialErrorLimit:     int(num(c, "dialErrorLimit", 10)),
		perDialTimeout:     int(num(c, "perDialTimeout", 15)),
	}
}
