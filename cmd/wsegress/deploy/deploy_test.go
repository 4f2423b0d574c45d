package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// bin is the wsegress binary built for the tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsegress-deploy")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "wsegress")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/wsegress/wsegress/cmd/wsegress").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build wsegress: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// flagEnvs returns every WSEGRESS_* variable the CLI reads, from the
// help of the commands that run in a deployment.
func flagEnvs(t *testing.T) map[string]bool {
	t.Helper()
	envs := map[string]bool{}
	for _, cmd := range []string{"serve", "healthcheck"} {
		out, err := exec.Command(bin, cmd, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("wsegress %s --help: %v\n%s", cmd, err, out)
		}
		for _, m := range regexp.MustCompile(`\$(WSEGRESS_[A-Z0-9_]+)`).FindAllStringSubmatch(string(out), -1) {
			envs[m[1]] = true
		}
	}
	if !envs["WSEGRESS_LISTEN"] || !envs["WSEGRESS_DRAIN_TIMEOUT"] {
		t.Fatalf("flag list from --help looks wrong: %v", envs)
	}
	return envs
}

var envRef = regexp.MustCompile(`WSEGRESS_[A-Z0-9_]+`)

// TestEnvNamesAreFlags checks that every WSEGRESS_* name in the packaging
// is one the CLI reads: a typo would be silently ignored.
func TestEnvNamesAreFlags(t *testing.T) {
	envs := flagEnvs(t)
	files := []string{"systemd/wsegress.service", "systemd/wsegress.env", "systemd/wsegress.socket", "Containerfile", "kubernetes/wsegress.yaml"}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range envRef.FindAllString(string(b), -1) {
			if !envs[name] {
				t.Errorf("%s: %s is not the variable of any flag", f, name)
			}
		}
	}
}

// unit reads a systemd unit or env file into key -> values (repeated
// keys keep every value; comments and sections are dropped).
func unit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not key=value", path, line)
		}
		kv[k] = append(kv[k], v)
	}
	return kv
}

// maxTunnelsFor is proxy/usage.go's formula for the default --max-tunnels;
// TestMaxTunnelsFormula checks this copy against the binary.
func maxTunnelsFor(nofile int) int {
	return max((nofile-max(256, nofile/10))/2, 1)
}

func TestMaxTunnelsFormula(t *testing.T) {
	const nofile = 4096 // below the hard limit of any test machine
	out, err := exec.Command("sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" serve --help`, nofile), bin).CombinedOutput()
	if err != nil {
		t.Skipf("cannot set the open-file limit to %d here: %v\n%s", nofile, err, out)
	}
	m := regexp.MustCompile(`--max-tunnels value .*\(default: (\d+)\)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no --max-tunnels default in help:\n%s", out)
	}
	if got, want := string(m[1]), strconv.Itoa(maxTunnelsFor(nofile)); got != want {
		t.Errorf("with %d descriptors the default --max-tunnels is %s; the formula in this test says %s: update both", nofile, got, want)
	}
}

func TestSystemdUnit(t *testing.T) {
	svc := unit(t, "systemd/wsegress.service")
	env := unit(t, "systemd/wsegress.env")
	want := map[string]string{
		"DynamicUser":             "yes",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter":        "@system-service",
		"KillSignal":              "SIGTERM",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"ExecStart":               "/usr/local/bin/wsegress serve",
		"EnvironmentFile":         "/etc/wsegress/wsegress.env",
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("wsegress.service: %s=%q; want %s=%s", k, got, k, v)
		}
	}

	stop := duration(t, "TimeoutStopSec", svc["TimeoutStopSec"])
	drain := duration(t, "WSEGRESS_DRAIN_TIMEOUT", env["WSEGRESS_DRAIN_TIMEOUT"])
	if stop <= drain {
		t.Errorf("TimeoutStopSec %v must exceed WSEGRESS_DRAIN_TIMEOUT %v, or SIGKILL cuts the drain", stop, drain)
	}

	nofile := number(t, "LimitNOFILE", svc["LimitNOFILE"])
	tunnels := number(t, "WSEGRESS_MAX_TUNNELS", env["WSEGRESS_MAX_TUNNELS"])
	if limit := maxTunnelsFor(nofile); tunnels > limit || tunnels < limit*9/10 {
		t.Errorf("WSEGRESS_MAX_TUNNELS=%d with LimitNOFILE=%d: keep it at most, and close to, the default %d that limit gives", tunnels, nofile, limit)
	}
	if sock := unit(t, "systemd/wsegress.socket"); len(sock["ListenStream"]) != 1 || sock["Service"][0] != "wsegress.service" {
		t.Errorf("wsegress.socket: ListenStream %q Service %q; want one listener for wsegress.service", sock["ListenStream"], sock["Service"])
	}
}

func duration(t *testing.T, name string, v []string) time.Duration {
	t.Helper()
	if len(v) != 1 {
		t.Fatalf("%s: %q; want exactly one value", name, v)
	}
	d, err := time.ParseDuration(v[0])
	if err != nil {
		t.Fatalf("%s=%s: %v", name, v[0], err)
	}
	return d
}

func number(t *testing.T, name string, v []string) int {
	t.Helper()
	if len(v) != 1 {
		t.Fatalf("%s: %q; want exactly one value", name, v)
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		t.Fatalf("%s=%s: %v", name, v[0], err)
	}
	return n
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the units, with
// ExecStart pointing at the binary just built (verify checks that it is
// executable). Any warning fails: unknown keys only warn.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: the unit files are checked by TestSystemdUnit only")
	}
	dir := t.TempDir()
	svc, err := os.ReadFile("systemd/wsegress.service")
	if err != nil {
		t.Fatal(err)
	}
	svc = bytes.ReplaceAll(svc, []byte("ExecStart=/usr/local/bin/wsegress "), []byte("ExecStart="+bin+" "))
	// The env file and the credential are read at start, not by verify.
	sock, err := os.ReadFile("systemd/wsegress.socket")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"wsegress.service": svc, "wsegress.socket": sock} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(sa, "verify", "--man=no", "./wsegress.service", "./wsegress.socket")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// k8sObject is the part of a manifest the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type deploymentSpec struct {
	Template struct {
		Spec struct {
			TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               struct {
				RunAsNonRoot bool `yaml:"runAsNonRoot"`
			} `yaml:"securityContext"`
			Containers []struct {
				Name string `yaml:"name"`
				Env  []struct {
					Name  string `yaml:"name"`
					Value string `yaml:"value"`
				} `yaml:"env"`
				Ports []struct {
					Name          string `yaml:"name"`
					ContainerPort int    `yaml:"containerPort"`
				} `yaml:"ports"`
				ReadinessProbe probe `yaml:"readinessProbe"`
				LivenessProbe  probe `yaml:"livenessProbe"`
				Lifecycle      struct {
					PreStop struct {
						Sleep struct {
							Seconds int `yaml:"seconds"`
						} `yaml:"sleep"`
					} `yaml:"preStop"`
				} `yaml:"lifecycle"`
				SecurityContext struct {
					ReadOnlyRootFilesystem bool `yaml:"readOnlyRootFilesystem"`
				} `yaml:"securityContext"`
			} `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type networkPolicySpec struct {
	PolicyTypes []string `yaml:"policyTypes"`
	Ingress     []struct {
		From  []map[string]any `yaml:"from"`
		Ports []struct {
			Port     int    `yaml:"port"`
			Protocol string `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"ingress"`
}

func TestKubernetesManifests(t *testing.T) {
	f, err := os.Open("kubernetes/wsegress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(f)
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("manifest does not parse: %v", err)
		}
		if o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("document without kind or name: %+v", o)
		}
		objs[o.Kind] = o
	}
	for _, k := range []string{"Namespace", "Secret", "ConfigMap", "Deployment", "Service", "NetworkPolicy"} {
		if _, ok := objs[k]; !ok {
			t.Errorf("no %s in the manifests", k)
		}
	}

	var d deploymentSpec
	spec := objs["Deployment"].Spec
	if err := spec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	pod := d.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	drain := duration(t, "WSEGRESS_DRAIN_TIMEOUT", []string{env["WSEGRESS_DRAIN_TIMEOUT"]})
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	if preStop <= 0 || grace <= preStop+drain {
		t.Errorf("terminationGracePeriodSeconds %v must exceed preStop %v + drain %v", grace, preStop, drain)
	}
	if !pod.SecurityContext.RunAsNonRoot || !c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("want runAsNonRoot and readOnlyRootFilesystem")
	}

	// Probes: the metrics port, named or by number, at the paths
	// wsegress serves there.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	metricsPort := port(t, env["WSEGRESS_METRICS_LISTEN"])
	proxyPort := port(t, env["WSEGRESS_LISTEN"])
	if ports["metrics"] != metricsPort || ports["proxy"] != proxyPort {
		t.Errorf("container ports %v; want proxy %d and metrics %d as in the env", ports, proxyPort, metricsPort)
	}
	for name, p := range map[string]struct {
		pr   probe
		path string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
		n := 0
		switch v := p.pr.HTTPGet.Port.(type) {
		case string:
			n = ports[v]
		case int:
			n = v
		}
		if p.pr.HTTPGet.Path != p.path || n != metricsPort {
			t.Errorf("%s probe GET %s on port %v; want %s on the metrics port %d", name, p.pr.HTTPGet.Path, p.pr.HTTPGet.Port, p.path, metricsPort)
		}
	}

	// NetworkPolicy: anyone may reach 3128; any other port only from a
	// named source.
	var np networkPolicySpec
	spec = objs["NetworkPolicy"].Spec
	if err := spec.Decode(&np); err != nil {
		t.Fatal(err)
	}
	open3128 := false
	for _, r := range np.Ingress {
		if len(r.Ports) == 0 {
			t.Errorf("an ingress rule without ports opens every port")
		}
		for _, p := range r.Ports {
			switch {
			case p.Port == 3128 && len(r.From) == 0:
				open3128 = true
			case len(r.From) == 0:
				t.Errorf("port %d is open to every source; only 3128 may be", p.Port)
			}
		}
	}
	if !open3128 || len(np.PolicyTypes) != 1 || np.PolicyTypes[0] != "Ingress" {
		t.Errorf("NetworkPolicy: want an Ingress policy opening port 3128 to clients")
	}
}

// port returns the port of a listen address such as ":3128".
func port(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	n, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("listen address %q has no port", addr)
	}
	return n
}
