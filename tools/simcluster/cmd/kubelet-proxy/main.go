// Command kubelet-proxy stands between kube-apiserver and kwok's kubelet endpoint.
//
// kwok serves a pod's log from a file and cannot tell that the pod's container has
// stopped, so a `follow` log stream never ends. A real kubelet ends it when the container
// exits. This proxy passes every request through to kwok and, for a followed log, ends
// the stream once the pod is Succeeded, Failed or gone and no byte has arrived for a
// moment, so clients see what they see on a real node.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

const (
	pollInterval = 250 * time.Millisecond
	quietPeriod  = 500 * time.Millisecond
)

type proxy struct {
	upstream *url.URL
	api      string
	client   *http.Client
	pass     *httputil.ReverseProxy
}

func main() {
	listen := flag.String("listen", "", "address to serve on, host:port")
	upstream := flag.String("upstream", "", "kwok's kubelet endpoint, https://host:port")
	certFile := flag.String("tls-cert-file", "", "serving certificate")
	keyFile := flag.String("tls-private-key-file", "", "serving private key")
	caFile := flag.String("ca-file", "", "CA that signed kwok's and the API server's certificates")
	apiServer := flag.String("api-server", "", "API server URL, https://host:port")
	clientCert := flag.String("client-cert-file", "", "client certificate for kwok and the API server")
	clientKey := flag.String("client-key-file", "", "client private key")
	flag.Parse()
	if *listen == "" || *upstream == "" || *apiServer == "" {
		log.Fatal("--listen, --upstream and --api-server are required")
	}

	ca, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("reading the CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		log.Fatalf("no certificate in %s", *caFile)
	}
	identity, err := tls.LoadX509KeyPair(*clientCert, *clientKey)
	if err != nil {
		log.Fatalf("loading the client certificate: %v", err)
	}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{
			RootCAs:      roots,
			Certificates: []tls.Certificate{identity},
			MinVersion:   tls.VersionTLS12,
		},
	}
	target, err := url.Parse(*upstream)
	if err != nil {
		log.Fatalf("parsing --upstream: %v", err)
	}
	pass := httputil.NewSingleHostReverseProxy(target)
	pass.Transport = transport
	pass.FlushInterval = -1
	p := &proxy{upstream: target, api: *apiServer, client: &http.Client{Transport: transport}, pass: pass}

	server := &http.Server{
		Addr:              *listen,
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12},
	}
	log.Printf("serving on %s, passing to %s", *listen, *upstream)
	log.Fatal(server.ListenAndServeTLS(*certFile, *keyFile))
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/containerLogs/") && r.URL.Query().Get("follow") == "true" {
		p.follow(w, r)
		return
	}
	p.pass.ServeHTTP(w, r)
}

// follow streams a followed log from kwok and ends it cleanly once the pod has finished.
func (p *proxy) follow(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
	if len(parts) < 2 {
		http.Error(w, "expected /containerLogs/<namespace>/<pod>/<container>", http.StatusBadRequest)
		return
	}
	namespace, pod := parts[0], parts[1]

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	upstream := *p.upstream
	upstream.Path = r.URL.Path
	upstream.RawQuery = r.URL.RawQuery
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, upstream.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	response, err := p.client.Do(request)
	if err != nil {
		http.Error(w, fmt.Sprintf("kwok's kubelet endpoint does not answer: %v", err), http.StatusBadGateway)
		return
	}
	defer response.Body.Close()
	for _, name := range []string{"Content-Type", "Cache-Control"} {
		if value := response.Header.Get(name); value != "" {
			w.Header().Set(name, value)
		}
	}
	w.WriteHeader(response.StatusCode)
	if response.StatusCode != http.StatusOK {
		_, _ = io.Copy(w, response.Body)
		return
	}

	var lastByte atomic.Int64
	lastByte.Store(time.Now().UnixNano())
	// Set before the upstream request is cancelled: whatever kwok sends after that is
	// its complaint about the cancellation ("context cancelled"), not the pod's log.
	var ending atomic.Bool
	go func() {
		ticker := time.NewTicker(pollInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				quiet := time.Since(time.Unix(0, lastByte.Load())) >= quietPeriod
				if quiet && p.finished(ctx, namespace, pod) {
					ending.Store(true)
					cancel()
					return
				}
			}
		}
	}()

	flusher, _ := w.(http.Flusher)
	buffer := make([]byte, 32*1024)
	for {
		n, err := response.Body.Read(buffer)
		if n > 0 && !ending.Load() {
			if _, werr := w.Write(buffer[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
			lastByte.Store(time.Now().UnixNano())
		}
		if err != nil {
			return // kwok ended the stream, the client left, or the pod finished
		}
	}
}

// finished reports whether the pod is Succeeded, Failed or deleted.
func (p *proxy) finished(ctx context.Context, namespace, pod string) bool {
	address := fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s", p.api, url.PathEscape(namespace), url.PathEscape(pod))
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, address, nil)
	if err != nil {
		return false
	}
	response, err := p.client.Do(request)
	if err != nil {
		return false
	}
	defer response.Body.Close()
	if response.StatusCode == http.StatusNotFound {
		return true
	}
	var object struct {
		Status struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
	if response.StatusCode != http.StatusOK || json.NewDecoder(response.Body).Decode(&object) != nil {
		return false
	}
	return object.Status.Phase == "Succeeded" || object.Status.Phase == "Failed"
}
