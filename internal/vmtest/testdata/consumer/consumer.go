// Package consumer is a fixture of internal/vmtest: a package with in-VM
// tests, run by TestRunPackageTests.
package consumer

// Answer is what the tests check.
const Answer = 42
