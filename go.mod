module github.com/vmpool/vmpool

go 1.24.0
