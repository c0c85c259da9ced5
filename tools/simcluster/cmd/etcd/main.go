// Command etcd is the etcd server of the simulated cluster, built from the same module
// graph as the control plane so that it speaks the storage features kube-apiserver expects
// (watch progress requests, which Debian's etcd 3.4 lacks).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
