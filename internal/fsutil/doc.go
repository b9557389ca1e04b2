// Package fsutil holds the file-system primitives of the file drivers:
// FICLONE, the sparse copy that replaces it where reflinks are not
// available (it also copies block devices, FIFOs and readers, and leaves
// both holes and written zeros as holes), durable rename/link/remove (each
// followed by an fsync of the directory), temporary files with the "~"
// names Qubes also cleans up, hole punching, loop-device capacity updates
// and an flock-based lock.
//
// Nothing here logs: callers log what they did, with the figures these
// functions return.
package fsutil
