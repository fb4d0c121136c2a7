package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/ocibundle"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// TestNetUpgrade streams bundles into a two-slot device over the network:
// an HTTPS server the test starts on 127.0.0.1 (a certificate of a test CA
// that the image trusts with [update] ca), reached from the guest through
// QEMU user networking as 10.0.2.2. On x86_64 and arm64:
//   - a 404, a plain http:// URL (the image does not allow it), a bundle
//     with one bit flipped in its root and a server that stops sending
//     (--stall 2s --retries 1) are refused, and the host finds slot b and
//     the boot entries byte for byte as before; a path that corrupts one
//     byte on the write pass only is refused with no entry for slot b;
//   - the good bundle through a server that cuts the connection at three
//     seeded offsets: each cut is resumed, the upgrade succeeds, slot b's
//     bytes equal the bundle's root and the next boot runs release 2;
//   - on a copy of the factory disk, QEMU killed halfway through the
//     write pass: the device boots its old slot, release 1; then
//     `ovroot push` to a registry and `ovrootctl upgrade oci://` from it
//     give it release 2.
//
// OVROOT_NET_SEED replays a run's cut offsets.
func TestNetUpgrade(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, c := range chainsFrom(t, "OVROOT_NET_UPGRADES", "x86_64,arm64") {
		t.Run(c.name(), func(t *testing.T) {
			t.Parallel()
			testNetUpgrade(t, c)
		})
	}
}

// guestHost is the host as QEMU's user network shows it to the guest: a
// connection to it reaches the host's 127.0.0.1.
const guestHost = "10.0.2.2"

// netCA is where the test CA lives in the test roots.
const netCA = "/etc/ovroot-test/ca.pem"

func testNetUpgrade(t *testing.T, c abChain) {
	arch := c.arch
	caPEM, cert := testCA(t)
	withCA := func(root string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, netCA), caPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		return root
	}
	netImage := func(im *config.Image) {
		c.image(im)
		im.Update.Network = true
		im.Update.CA = netCA
		im.Modules = append(im.Modules, "virtio_net")
	}
	img := buildImage(t, arch, withCA(abRootfs(t, arch, "1", false)), netImage)
	good := buildBundle(t, c, withCA(abRootfs(t, arch, "2", false)), release("2"), func(im *config.Image) {
		im.Update.Network, im.Update.CA = true, netCA
		im.Modules = append(im.Modules, "virtio_net")
	})
	bad := flipBundle(t, good, slot.RootName, 70000)
	root := bundleMember(t, good, slot.RootName)

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("OVROOT_NET_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("cut offsets from OVROOT_NET_SEED=%d", seed)
	srv := newBundleServer(t, cert, map[string]string{"good.bundle": good, "bad.bundle": bad, "cut.bundle": good, "slow.bundle": good, "flaky.bundle": good, "stall.bundle": good})
	size := srv.size("cut.bundle")
	rng := mrand.New(mrand.NewPCG(seed, 7))
	for i := 0; i < 3; i++ {
		srv.cutAt("cut.bundle", int64(1+rng.IntN(int(size-2))))
	}
	url := func(name string) string { return fmt.Sprintf("https://%s:%d/%s", guestHost, srv.port, name) }

	d := &abDevice{t: t, chain: c, img: img, net: true}
	cut := d.copyDisk("powercut")

	// Boot 1: the refusals change nothing; then the upgrade through the
	// cutting server.
	before := snapshot(t, img)
	vm := d.mustBoot()
	guest(t, vm, "net-up eth0 10.0.2.15 255.255.255.0")
	for _, r := range []struct{ url, want string }{
		{url("missing.bundle"), "404"},
		{fmt.Sprintf("http://%s:%d/good.bundle", guestHost, srv.port), "allow_http"},
		{url("bad.bundle"), "bundle member root.squashfs: sha256"},
		// A server that stops sending: given up after the stall and the
		// retries asked for.
		{"--stall 2s --retries 1 " + url("stall.bundle"), "no data for 2s"},
	} {
		out, err := guestErr(vm, "exec /usr/bin/ovrootctl upgrade "+r.url)
		if err == nil || !strings.Contains(out, r.want) {
			t.Errorf("ovrootctl upgrade %s: %v\n%s\nwant refused: %q", r.url, err, out, r.want)
		}
	}
	if after := snapshot(t, img); after != before {
		t.Errorf("refused network bundles changed the device:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// A path that corrupts one byte of the root on the second download
	// only (the write pass): the check pass saw the right bytes, the
	// write pass must catch the wrong one, and slot b gets no entry.
	srv.flipOnWritePass("flaky.bundle", int64(bytes.Index(srv.files["flaky.bundle"], root[:64<<10])+len(root)/3))
	out, err := guestErr(vm, "exec /usr/bin/ovrootctl upgrade "+url("flaky.bundle"))
	if err == nil || !strings.Contains(out, "root.squashfs") {
		t.Errorf("ovrootctl upgrade of a bundle corrupted on the write pass: %v\n%s\nwant refused naming root.squashfs", err, out)
	}
	wantEntries(t, img, c.entries("", 0)[0])
	out = guest(t, vm, "exec /usr/bin/ovrootctl upgrade "+url("cut.bundle"))
	if !strings.Contains(out, "upgrade: version 2") || !strings.Contains(out, "slot b holds build") {
		t.Errorf("ovrootctl upgrade through the cutting server:\n%s", out)
	}
	if n := srv.cutsDone("cut.bundle"); n != 3 {
		t.Errorf("the server cut the download %d times, want 3", n)
	}
	if n := strings.Count(out, "unexpected EOF; retry "); n != 3 {
		t.Errorf("ovrootctl said %d times that it resumed a cut download, want 3:\n%s", n, out)
	}
	if ranges := srv.rangeRequests("cut.bundle"); ranges < 3 {
		t.Errorf("the server saw %d range requests for the cut bundle, want 3 or more", ranges)
	}
	powerOff(t, vm)
	wantEntries(t, img, c.entries(layout.SlotB, 0)...)
	if got := partitionBytes(t, img, layout.SlotB.Label(layout.RootLabel)); len(got) < len(root) || !bytes.Equal(got[:len(root)], root) {
		t.Errorf("slot b does not hold the bundle's root (%d bytes)", len(root))
	}

	// Boot 2: release 2 from slot b.
	vm = d.mustBoot()
	if s := runningSlot(t, vm); s != layout.SlotB {
		t.Errorf("after the network upgrade the device runs slot %s, want b", s)
	}
	if v := guest(t, vm, "cat /etc/ovroot-test/version"); v != "2\n" {
		t.Errorf("slot b's root says version %q, want 2", v)
	}
	powerOff(t, vm)

	// The power cut: QEMU killed once the write pass has been served
	// halfway into the root member.
	vm = cut.mustBoot()
	guest(t, vm, "net-up eth0 10.0.2.15 255.255.255.0")
	rootAt := bytes.Index(srv.files["slow.bundle"], root[:64<<10])
	if rootAt < 0 {
		t.Fatal("the root member is not in the bundle's bytes")
	}
	srv.killAt("slow.bundle", int64(rootAt+len(root)/2), vm.Kill)
	if err := vm.Send("exec /usr/bin/ovrootctl upgrade " + url("slow.bundle")); err != nil {
		t.Fatal(err)
	}
	vm.Wait(bootTimeout) // killed: an error
	if !srv.killed("slow.bundle") {
		t.Fatalf("QEMU ended before the write pass reached the cut:\n%s", vm.Tail(30))
	}
	vm = cut.mustBoot()
	if s := runningSlot(t, vm); s != layout.SlotA {
		t.Errorf("after a power cut during a network upgrade the device runs slot %s, want a", s)
	}
	if v := guest(t, vm, "cat /etc/ovroot-test/version"); v != "1\n" {
		t.Errorf("after the cut slot a's root says version %q, want 1", v)
	}
	if got := espEntries(t, cut.img); strings.Join(got, " ") != c.entries("", 0)[0] {
		t.Errorf("after the cut the ESP has %v, want slot a's entry alone", got)
	}

	// The same device from a registry: `ovroot push` (the host's side,
	// plain HTTP) to go-containerregistry's registry, which the guest
	// reaches over HTTPS (the same registry behind the test CA's
	// certificate), and `ovrootctl upgrade oci://`.
	ref := pushBundle(t, good, arch, cert)
	guest(t, vm, "net-up eth0 10.0.2.15 255.255.255.0")
	out = guest(t, vm, fmt.Sprintf("exec /usr/bin/ovrootctl upgrade oci://%s:%d/%s", guestHost, ref.tlsPort, ref.repoTag))
	if !strings.Contains(out, "upgrade: version 2") || !strings.Contains(out, "slot b holds build") {
		t.Errorf("ovrootctl upgrade from the registry:\n%s", out)
	}
	powerOff(t, vm)
	vm = cut.mustBoot()
	if s := runningSlot(t, vm); s != layout.SlotB {
		t.Errorf("after the registry upgrade the device runs slot %s, want b", s)
	}
	if v := guest(t, vm, "cat /etc/ovroot-test/version"); v != "2\n" {
		t.Errorf("after the registry upgrade slot b's root says version %q, want 2", v)
	}
	powerOff(t, vm)
}

// pushedBundle is where pushBundle put a bundle.
type pushedBundle struct {
	tlsPort int    // the registry over HTTPS (the test CA's certificate)
	repoTag string // REPO:TAG
}

// pushBundle starts a registry (go-containerregistry's, in memory) on
// 127.0.0.1, twice: plain HTTP for the host and HTTPS with the test CA's
// certificate for the guest, pushes the bundle with ovroot's own push and
// checks the manifest the registry serves carries the bundle's version,
// arch and board as annotations.
func pushBundle(t *testing.T, bundle string, arch layout.Arch, cert tls.Certificate) pushedBundle {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	plain := httptest.NewServer(reg)
	t.Cleanup(plain.Close)
	tlsSrv := httptest.NewUnstartedServer(reg)
	tlsSrv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	const repoTag = "ovroot/router:2"
	hostRef := strings.TrimPrefix(plain.URL, "http://") + "/" + repoTag
	pushed, err := ocibundle.Push(context.Background(), bundle, hostRef, ocibundle.Options{PlainHTTP: true})
	if err != nil {
		t.Fatalf("ovroot push: %v", err)
	}
	r, err := name.ParseReference(hostRef, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"org.opencontainers.image.version": "2", ocibundle.AnnotationArch: string(arch), ocibundle.AnnotationBoard: "test-board"} {
		if got := m.Annotations[k]; got != want {
			t.Errorf("the registry's manifest of %s: annotation %s = %q, want %q (all: %v)", pushed.Ref, k, got, want, m.Annotations)
		}
	}
	return pushedBundle{tlsPort: tlsSrv.Listener.Addr().(*net.TCPAddr).Port, repoTag: repoTag}
}

// bundleMember is one member's bytes of a bundle (a tar).
func bundleMember(t *testing.T, bundle, name string) []byte {
	t.Helper()
	f, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no member %s: %v", bundle, name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// testCA makes a CA and a server certificate it signs for the addresses
// the server is reached at: 10.0.2.2 from the guest, 127.0.0.1 from the
// host. It returns the CA as PEM and the server's certificate.
func testCA(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ovroot test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "updates.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(guestHost), net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// bundleServer serves bundles over HTTPS with ranges and an ETag
// (http.ServeContent), and misbehaves on request: it cuts the connection
// when a download reaches a given offset (once per offset), or calls a
// kill function once the second full download of a file (the write pass)
// reaches an offset.
type bundleServer struct {
	t     *testing.T
	port  int
	files map[string][]byte

	mu       sync.Mutex
	cuts     map[string][]int64 // offsets still to cut at
	cutCount map[string]int
	ranges   map[string]int
	fulls    map[string]int // downloads from 0
	kill     map[string]killPoint
	flip     map[string]int64 // a byte flipped in the write pass
}

type killPoint struct {
	at   int64
	f    func() error
	done bool
}

func newBundleServer(t *testing.T, cert tls.Certificate, files map[string]string) *bundleServer {
	t.Helper()
	s := &bundleServer{t: t, files: map[string][]byte{}, cuts: map[string][]int64{}, cutCount: map[string]int{},
		ranges: map[string]int{}, fulls: map[string]int{}, kill: map[string]killPoint{}, flip: map[string]int64{}}
	for name, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s.files[name] = b
	}
	srv := httptest.NewUnstartedServer(s)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return s
}

func (s *bundleServer) size(name string) int64 { return int64(len(s.files[name])) }

func (s *bundleServer) cutAt(name string, off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts[name] = append(s.cuts[name], off)
}

func (s *bundleServer) cutsDone(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cutCount[name]
}

func (s *bundleServer) rangeRequests(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ranges[name]
}

func (s *bundleServer) killAt(name string, off int64, f func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kill[name] = killPoint{at: off, f: f}
}

func (s *bundleServer) flipOnWritePass(name string, off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flip[name] = off
}

func (s *bundleServer) killed(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kill[name].done
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	data, ok := s.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	start := int64(0)
	s.mu.Lock()
	if rg := r.Header.Get("Range"); rg != "" {
		s.ranges[name]++
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64); err == nil {
			start = n
		}
	} else {
		s.fulls[name]++
	}
	// The next cut after start, if any, and the kill point of the write
	// pass (the second download from 0).
	limit, at := int64(-1), -1
	for i, c := range s.cuts[name] {
		if c > start && (limit < 0 || c < limit) {
			limit, at = c, i
		}
	}
	if at >= 0 {
		s.cuts[name] = append(s.cuts[name][:at:at], s.cuts[name][at+1:]...)
		s.cutCount[name]++
	}
	kp, hasKill := s.kill[name]
	writePass := hasKill && s.fulls[name] >= 2 && !kp.done
	if off, ok := s.flip[name]; ok && s.fulls[name] >= 2 {
		data = bytes.Clone(data)
		data[off] ^= 0x01
	}
	s.mu.Unlock()

	if name == "stall.bundle" {
		// The headers and 64 KiB, then nothing until the client leaves.
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Header().Set("ETag", `"stall"`)
		w.WriteHeader(http.StatusOK)
		w.Write(data[:64<<10])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	sum := sha256.Sum256(s.files[name]) // a corrupting path keeps the ETag
	w.Header().Set("ETag", fmt.Sprintf(`"%x"`, sum[:8]))
	switch {
	case limit >= 0:
		// Cut: the headers and the bytes up to limit, then the
		// connection dropped (the client sees a short body).
		http.ServeContent(&limitWriter{ResponseWriter: w, left: limit - start}, r, name, time.Unix(1700000000, 0), bytes.NewReader(data))
		panic(http.ErrAbortHandler)
	case writePass:
		kill := func() {
			// Time for the guest to write what it got into the slot.
			time.Sleep(2 * time.Second)
			s.mu.Lock()
			kp := s.kill[name]
			kp.done = true
			s.kill[name] = kp
			s.mu.Unlock()
			kp.f()
		}
		http.ServeContent(&limitWriter{ResponseWriter: w, left: kp.at, then: kill}, r, name, time.Unix(1700000000, 0), bytes.NewReader(data))
	default:
		http.ServeContent(w, r, name, time.Unix(1700000000, 0), bytes.NewReader(data))
	}
}

// limitWriter writes the first left bytes of a body, flushes them, calls
// then (if set) and drops the rest: the connection cut of a download (the
// client sees a short body) or the power cut of the write pass.
type limitWriter struct {
	http.ResponseWriter
	left int64
	then func()
}

func (c *limitWriter) Write(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrShortWrite
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.ResponseWriter.Write(b)
	c.left -= int64(n)
	if c.left > 0 {
		return n, err
	}
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if c.then != nil {
		c.then()
	}
	return n, io.ErrShortWrite
}
