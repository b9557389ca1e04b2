package features

import "reflect"

// VM is what the caller's VM type provides for feature lookups. Template
// and NetVM return nil when there is none (return an untyped nil; a typed
// nil pointer is treated as none too).
type VM interface {
	Features() *Features
	Template() VM
	NetVM() VM
}

// maxChain bounds a lookup along template or netvm links, so that a cycle
// in the caller's VM graph ends the search instead of looping.
const maxChain = 64

// CheckWithTemplate looks the feature up in vm, then along its template
// chain, and returns the first value found, even "" (Qubes'
// check_with_template). ok is false when no VM in the chain has it.
func CheckWithTemplate(vm VM, name string) (value string, ok bool) {
	return check(vm, nil, name, VM.Template)
}

// CheckWithNetVM looks the feature up in vm, then along its netvm chain
// (Qubes' check_with_netvm).
func CheckWithNetVM(vm VM, name string) (value string, ok bool) {
	return check(vm, nil, name, VM.NetVM)
}

// CheckWithAdminVM looks the feature up in vm, then in the admin VM (dom0)
// unless vm is the admin VM (Qubes' check_with_adminvm).
func CheckWithAdminVM(vm, admin VM, name string) (value string, ok bool) {
	return check(vm, admin, name, nil)
}

// CheckWithTemplateAndAdminVM looks the feature up along vm's template
// chain, then in the admin VM (Qubes' check_with_template_and_adminvm).
func CheckWithTemplateAndAdminVM(vm, admin VM, name string) (value string, ok bool) {
	return check(vm, admin, name, VM.Template)
}

// templateBased reports whether vm has a template.
func templateBased(vm VM) bool { return !isNil(vm.Template()) }

func check(vm, admin VM, name string, next func(VM) VM) (string, bool) {
	if isNil(vm) {
		return "", false
	}
	self := vm.Features()
	cur := vm
	for i := 0; i < maxChain && !isNil(cur); i++ {
		if f := cur.Features(); f != nil {
			if v, ok := f.Get(name); ok {
				return v, true
			}
		}
		if next == nil {
			break
		}
		cur = next(cur)
	}
	if !isNil(admin) {
		if f := admin.Features(); f != nil && f != self {
			if v, ok := f.Get(name); ok {
				return v, true
			}
		}
	}
	return "", false
}

// isNil reports whether vm is nil or a nil pointer in an interface.
func isNil(vm VM) bool {
	if vm == nil {
		return true
	}
	v := reflect.ValueOf(vm)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Interface, reflect.Chan:
		return v.IsNil()
	}
	return false
}
