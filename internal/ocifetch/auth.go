package ocifetch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// auth is what a pull sends the registry: nothing, Basic credentials, or
// a bearer token from the registry's token endpoint.
type auth struct {
	ref    Ref
	client *http.Client
	cred   Credential
	scheme string // https, or http for a registry that speaks only that

	mu    sync.Mutex
	authz string // the Authorization header, "" none
}

func (a *auth) host() string { return a.ref.Registry }

func (a *auth) url(path string) string {
	return a.scheme + "://" + a.ref.Registry + "/v2/" + a.ref.Repo + "/" + path
}

func (a *auth) header() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.authz
}

// manifest GETs the reference's manifest, answering one auth challenge.
func (a *auth) manifest(ctx context.Context, allowHTTP bool) (raw []byte, contentType string, err error) {
	resp, err := a.get(ctx)
	if err != nil && allowHTTP && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		a.scheme = "http"
		resp, err = a.get(ctx)
	}
	if err != nil {
		return nil, "", fmt.Errorf("oci://%s: %w", a.ref, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		ch := resp.Header.Get("WWW-Authenticate")
		resp.Body.Close()
		if err := a.answer(ctx, ch); err != nil {
			return nil, "", fmt.Errorf("oci://%s: %w", a.ref, err)
		}
		if resp, err = a.get(ctx); err != nil {
			return nil, "", fmt.Errorf("oci://%s: %w", a.ref, err)
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("oci://%s: %s", a.ref, statusMessage(resp))
	}
	if resp.ContentLength > maxManifest {
		return nil, "", fmt.Errorf("oci://%s: the manifest is %d bytes, more than a manifest may be", a.ref, resp.ContentLength)
	}
	raw, err = io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, "", fmt.Errorf("oci://%s: manifest: %w", a.ref, err)
	}
	if len(raw) > maxManifest {
		return nil, "", fmt.Errorf("oci://%s: the manifest is more than %d bytes", a.ref, maxManifest)
	}
	return raw, resp.Header.Get("Content-Type"), nil
}

func (a *auth) get(ctx context.Context) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url("manifests/"+a.ref.reference()), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", ManifestMediaType+", application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	if h := a.header(); h != "" {
		req.Header.Set("Authorization", h)
	}
	return a.client.Do(req)
}

// statusMessage says why a manifest GET failed, with the registry's
// error codes (distribution-spec §"Error Codes") when it sent them.
func statusMessage(resp *http.Response) string {
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	json.Unmarshal(data, &body)
	var codes []string
	for _, e := range body.Errors {
		codes = append(codes, strings.TrimSpace(e.Code+" "+e.Message))
	}
	detail := ""
	if len(codes) > 0 {
		detail = " (" + strings.Join(codes, "; ") + ")"
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return "not found in the registry" + detail + ": check the repository and tag (`ovroot push` prints what it published)"
	case http.StatusUnauthorized, http.StatusForbidden:
		return "the registry refused access: " + resp.Status + detail + ": a private repository needs credentials in " + CredentialsFile
	}
	return "GET manifest: " + resp.Status + detail
}

// CredentialsFile is where ovrootctl reads registry credentials.
const CredentialsFile = "/etc/ovroot/registry-auth.json"

// answer meets a 401's challenge: Basic with the credentials, or Bearer
// with a token from the realm it names.
func (a *auth) answer(ctx context.Context, challenge string) error {
	scheme, params := parseChallenge(challenge)
	switch strings.ToLower(scheme) {
	case "basic":
		if a.cred.Username == "" {
			return fmt.Errorf("the registry asks for a password (Basic auth) and %s has none for %s", CredentialsFile, a.ref.Registry)
		}
		if a.scheme != "https" {
			return fmt.Errorf("the registry asks for a password over plain http: not sending it")
		}
		req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		req.SetBasicAuth(a.cred.Username, a.cred.Password)
		a.set(req.Header.Get("Authorization"))
		return nil
	case "bearer":
		return a.token(ctx, params)
	}
	return fmt.Errorf("the registry answered 401 with a challenge this client does not speak: WWW-Authenticate %q", challenge)
}

// token GETs a bearer token from the realm (the Docker registry token
// spec; anonymous unless there are credentials).
func (a *auth) token(ctx context.Context, p map[string]string) error {
	realm := p["realm"]
	u, err := url.Parse(realm)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("the registry's token realm %q is not an http(s) URL", realm)
	}
	q := u.Query()
	if s := p["service"]; s != "" {
		q.Set("service", s)
	}
	scope := p["scope"]
	if scope == "" {
		scope = "repository:" + a.ref.Repo + ":pull"
	}
	q.Set("scope", scope)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	if a.cred.Username != "" {
		if u.Scheme != "https" && a.scheme == "https" {
			return fmt.Errorf("the registry's token realm %s is plain http: not sending the password there", realm)
		}
		req.SetBasicAuth(a.cred.Username, a.cred.Password)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("token from %s: %w", realm, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("token from %s: %s", realm, resp.Status)
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t); err != nil {
		return fmt.Errorf("token from %s: %w", realm, err)
	}
	if t.Token == "" {
		t.Token = t.AccessToken
	}
	if t.Token == "" {
		return fmt.Errorf("token from %s: the answer holds no token", realm)
	}
	a.set("Bearer " + t.Token)
	return nil
}

func (a *auth) set(h string) {
	a.mu.Lock()
	a.authz = h
	a.mu.Unlock()
}

// parseChallenge splits `Bearer realm="...",service="...",scope="a,b"`
// into its scheme and parameters (RFC 9110 §11.6.1: quoted values may hold
// commas).
func parseChallenge(s string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(s), " ")
	p := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		key = strings.ToLower(strings.TrimSpace(key))
		var val string
		if strings.HasPrefix(after, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				b.WriteByte(after[i])
			}
			val, rest = b.String(), after[min(i+1, len(after)):]
		} else {
			val, rest, _ = strings.Cut(after, ",")
			rest = "," + rest
		}
		p[key] = strings.TrimSpace(val)
		rest = strings.TrimLeft(rest, ", ")
	}
	return scheme, p
}
