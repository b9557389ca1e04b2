package features

import (
	"strings"
	"time"
)

// Value checks and conversions used by the request rules.

func nonEmpty(s string) bool { return s != "" }
func isOne(s string) bool    { return s == "1" }
func isBit(s string) bool    { return s == "0" || s == "1" }

func asString(s string) any { return s }
func asBool(s string) any   { return s == "1" }

// validOSVersion: digits, '.' and '-' only, starting with a digit.
func validOSVersion(s string) bool {
	if s == "" || !isDigit(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && s[i] != '.' && s[i] != '-' {
			return false
		}
	}
	return true
}

// validDate: YYYY-MM-DD naming a real calendar date.
func validDate(s string) bool {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	for _, i := range []int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isDigit(s[i]) {
			return false
		}
	}
	_, err := time.Parse(time.DateOnly, s)
	return err == nil && s[:4] != "0000"
}

// validAgentVersion: [0-9]{1,3}\.[0-9]{1,3}, the whole string.
func validAgentVersion(s string) bool {
	major, minor, ok := strings.Cut(s, ".")
	return ok && digits(major, 1, 3) && digits(minor, 1, 3)
}

func digits(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
