// Package file is the "file" driver: Qubes' original file pool, VM images
// as sparse files with device-mapper snapshots over loop devices.
package file
