// Command esxsim runs govmomi's standalone-ESXi simulator (simulator.ESX()) over HTTPS for
// bootbox's tests, with the extensions in ext.go that the ESXi host profile needs.
//
// It is built offline from Debian's golang-github-vmware-govmomi-dev (GO111MODULE=off
// GOPATH=/usr/share/gocode go build). Every start is a fresh host: a new self-signed
// certificate, a new runtime.bootTime and no configuration, as a stateless ESXi host has after
// a reboot. It prints one JSON line (url, thumbprints, boot time, pid) on stdout once it
// answers, and serves until SIGTERM or SIGINT.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func selfSigned(host string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"esxsim (bootbox tests)"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func colonHex(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address:port to serve HTTPS on")
	user := flag.String("user", "root", "the account that may log in")
	password := flag.String("password", "", "its password (empty: a fresh stateless host)")
	edition := flag.String("edition", "evaluation", "licence: evaluation, or free (vSphere Hypervisor: the API is read-only)")
	certFile := flag.String("cert", "", "PEM certificate to present (with -key), as ESXi's /etc/vmware/ssl/rui.crt; default: a new self-signed one")
	keyFile := flag.String("key", "", "PEM private key of -cert, as ESXi's /etc/vmware/ssl/rui.key")
	flag.Parse()

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatalf("-listen: %v", err)
	}
	var cert tls.Certificate
	if *certFile != "" || *keyFile != "" {
		cert, err = tls.LoadX509KeyPair(*certFile, *keyFile)
	} else {
		cert, err = selfSigned(host)
	}
	if err != nil {
		log.Fatalf("certificate: %v", err)
	}

	model := simulator.ESX()
	if err := model.Create(); err != nil {
		log.Fatalf("model: %v", err)
	}
	defer model.Remove()
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}

	server := model.Service.NewServer()
	defer server.Close()
	if *edition != "evaluation" && *edition != "free" {
		log.Fatalf("-edition: %q is not evaluation or free", *edition)
	}
	extend(model.Service, *edition)

	der := cert.Certificate[0]
	sha1sum := sha1.Sum(der)
	sha256sum := sha256.Sum256(der)
	hostSystem := simulator.Map.Any("HostSystem").(*simulator.HostSystem)
	bootTime := ""
	if hostSystem.Runtime.BootTime != nil {
		bootTime = hostSystem.Runtime.BootTime.UTC().Format(time.RFC3339Nano)
	}
	u := *server.URL
	u.User = nil
	line, _ := json.Marshal(map[string]interface{}{
		"url":               u.String(),
		"thumbprint_sha1":   colonHex(sha1sum[:]),
		"thumbprint_sha256": colonHex(sha256sum[:]),
		"boot_time":         bootTime,
		"pid":               os.Getpid(),
	})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
