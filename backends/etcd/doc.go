// Package etcd is a ctxlock.Backend on an etcd v3 cluster, through a
// clientv3.Client.
package etcd
