module mtls-operator/e2e/interop/go

go 1.27
