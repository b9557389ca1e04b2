// Package integration holds tests, and only tests, that run several
// drivers together through pool.Manager: the file → file-reflink
// migration, imports between the file drivers and filesystems, the
// initial pools on a filesystem that takes reflinks. The tests of a single
// driver live in its package; those that need device-mapper are built
// with the vmtest tag and run in the test VM (internal/vmtest).
package integration
