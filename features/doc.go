// Package features holds per-VM feature maps with Qubes OS' value rules,
// their lookup through templates, netvms and the admin VM, the events fired
// when they change, and the handler for the feature requests a VM's tools
// send (qubes.FeaturesRequest and the legacy qubes.NotifyTools).
//
// The package does not manage VMs: the caller's VM type implements the small
// VM interface (its Features map, its template and its netvm) and, for
// requests, Guest (plus the few properties a request may change).
//
// # Feature maps
//
// A Features map holds strings. A feature is absent, false ("") or true
// (any other string); Set converts true to "1" and false or nil to "".
// Set and Delete fire pre- and post-events through a Hooks shared by all
// VMs; a pre-event hook may veto the change. CheckWithTemplate,
// CheckWithNetVM, CheckWithAdminVM and CheckWithTemplateAndAdminVM return
// the first value found along the chain, even "", as Qubes'
// check_with_* do. ValidName, ParseValue, CheckAdminChange and
// CheckServiceName are the checks the Admin API layer applies to
// admin.vm.feature.Set and Remove.
//
// # Feature requests
//
// A request is untrusted. HandleFeaturesRequest checks every value first
// (strict ASCII; only letters, digits and "-.,_= ") and, as Qubes does,
// refuses the whole request, changing nothing, if one value is bad, even
// one under a key nobody handles. An entry whose key is not a valid
// feature name is dropped alone and listed in Result.InvalidKeys; the
// other entries still apply. HandleNotifyTools reads the fixed keys of the
// legacy service (values letters and digits only) and then takes the same
// path. The outcome is a function of the VM and the request only. Keys
// nobody handles are ignored; a key that is handled but whose value fails
// its check is dropped alone and listed in Result.Rejected:
//
//	key                               check                       policy
//	os-distribution(-like)            non-empty                   overwrite
//	os-version                        [0-9][0-9.-]*               overwrite
//	os-eol                            YYYY-MM-DD, a real date      overwrite
//	qubes-agent-version               [0-9]{1,3}.[0-9]{1,3}        overwrite
//	anon-timezone                     "1"                          only enable
//	qrexec, gui, gui-emulated         "0" or "1"                   only if absent
//	qubes-firewall, vmexec            "0" or "1"                   overwrite
//	boot-mode.*                       see below                    batch replace
//	os (Windows Tools)                Windows or Linux             overwrite
//	supported-service.*               "1" advertises               sync set
//	supported-feature.*, -rpc.*       "1" advertises               sync set
//	default-user                      ValidUser                    property, only if unset
//
// gui "1" enables the agent-based GUI and "0" disables the GUI; nothing
// else is accepted, and gui-emulated asks for the stub-domain GUI. qrexec,
// gui and gui-emulated are written only where the VM's own map lacks them,
// so a template's tools fill in what is missing and never change a value
// the user set, true or false. The first time qrexec turns true,
// Result.PostInstall asks the caller to finish the template's setup.
//
// os=Windows with qrexec=1 also sets rpc-clipboard, the properties
// maxmem=0 and qrexec_timeout=6000, and stubdom-qrexec, audio-model=ich6,
// timezone=localtime and no-monitor-layout where the template chain has
// none of them. Boot modes: boot-mode.kernelopts.<id> (id not "default",
// exactly three dot-separated parts), with boot-mode.name.<id> and
// boot-mode.default-user.<id> kept only beside their kernelopts (a name may
// also be for "default"); the batch replaces the VM's current one if it has
// 1 to 64 entries and no repeated name or user. boot-mode.active,
// boot-mode.appvm-default (templates only) and boot-mode.standalone-default
// must name an existing mode or "default". A supported-*.* sync makes the
// set of true keys equal to the advertised ones, unless none is advertised.
//
// Template-based VMs (those with a template) are ignored by every handler
// except supported-rpc.*, as in Qubes.
//
// # Decisions where Qubes leaves a choice
//
//   - default-user is applied (DESIGN.md deviation): a name passing
//     ValidUser is copied into default_user if that is not set explicitly.
//     ValidUser allows the property's set [A-Za-z0-9_+,.-] and also refuses
//     "", ".", "..", a leading '-' and names over 32 bytes. The same check
//     applies to boot-mode.default-user.<id>, as the reference advises.
//   - Request keys are checked too. Qubes' qubes_features_request
//     (qubes/api/misc.py) checks values only and hands every key to the
//     handlers, which ignore the keys they do not know but store
//     supported-service.<x>, supported-feature.<x>, supported-rpc.<x> and
//     boot-mode.*.<id> keys as feature names unchecked. Here a key that is
//     not a valid feature name is dropped with its entry before any handler
//     runs, and reported in Result.InvalidKeys; the rest of the request
//     applies, so one odd key does not cost a VM its qrexec or services.
//   - Set and Load refuse names outside [A-Za-z0-9_.-]+.
//   - Keys of a request are processed in sorted order, so events fire in
//     a deterministic order (Qubes follows QubesDB's order).
//   - Starting R3.x-based VMs (QubesOS issue 1812): QrexecWait and
//     QrexecEnv tell the daemon not to wait for a qrexec agent the VM's
//     template chain never advertised; R3Entries produces the R3-era
//     QubesDB entries for every VM, as Qubes does.
//
// # Tests and the Qubes test suite
//
// Every case of the Qubes checklist in the reference has a Go subtest named
// Test<Class>/<number>_<name>, with Class the Qubes test class without its
// TC_NN_ prefix: TestFeatures (vm/init.py TC_21_Features), TestAdminAPI
// (api_admin.py 280-325), TestAPIMisc (api_misc.py), TestCoreFeatures and
// TestCoreFeaturesBootModes (ext.py TC_00_CoreFeatures), TestWindowsFeatures
// (TC_10), TestServices (TC_20_Services), TestSupportedFeatures (TC_30).
// A subtest name with a further "/suffix" adds a check to that case.
// Cases that assume the daemon test the validators and the maps the
// functions return instead of QubesDB writes or API replies.
package features
