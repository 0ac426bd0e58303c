//! libvirt, loaded when it is first needed: the crate's only `unsafe`.
//!
//! vmnap does not link libvirt: a daemon with only namespace guests would otherwise map and
//! initialise libvirt and everything behind it (gnutls, libxml2, ...) for nothing, about
//! 15 MB of private memory. The first connection `dlopen`s `libvirt.so.0` and resolves the
//! functions below into a table that lives as long as the process (it is never
//! `dlclose`d). A machine without libvirt gets a [`LoadError`] that says what to install.
//!
//! The signatures are written from libvirt's headers (`libvirt-host.h`, `libvirt-domain.h`,
//! `virterror.h`); every function used is in libvirt 1.2.14 or later. Above them sit safe
//! handles, [`Connect`] and [`Domain`], that free themselves when dropped.

use std::ffi::{
    c_char, c_int, c_longlong, c_uchar, c_uint, c_ulong, c_ulonglong, c_ushort, c_void,
};
use std::ffi::{CStr, CString};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use crate::LibvirtError;

/// The library loaded, by its soname (the runtime package's file, not the `-dev` symlink).
const LIBVIRT: &CStr = c"libvirt.so.0";

/// `VIR_DOMAIN_RUNNING` (`virDomainState`).
pub(crate) const VIR_DOMAIN_RUNNING: u32 = 1;
/// `VIR_DOMAIN_PAUSED`.
pub(crate) const VIR_DOMAIN_PAUSED: u32 = 3;
/// `VIR_DOMAIN_SHUTOFF`.
pub(crate) const VIR_DOMAIN_SHUTOFF: u32 = 5;
/// `VIR_DOMAIN_PMSUSPENDED`.
pub(crate) const VIR_DOMAIN_PMSUSPENDED: u32 = 7;
/// `VIR_DOMAIN_METADATA_ELEMENT` (`virDomainMetadataType`).
const VIR_DOMAIN_METADATA_ELEMENT: c_int = 2;
/// `VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE` (`virDomainInterfaceAddressesSource`).
const VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE: c_uint = 0;
/// `VIR_ERR_INTERNAL_ERROR` (`virErrorNumber`).
const VIR_ERR_INTERNAL_ERROR: c_int = 1;
/// `VIR_ERR_INVALID_ARG`.
const VIR_ERR_INVALID_ARG: c_int = 8;
/// `VIR_ERR_ERROR` (`virErrorLevel`).
const VIR_ERR_ERROR: c_int = 2;

/// `struct _virConnect`, opaque.
#[repr(C)]
struct VirConnect {
    _opaque: [u8; 0],
}

/// `struct _virDomain`, opaque.
#[repr(C)]
struct VirDomain {
    _opaque: [u8; 0],
}

/// `struct _virError` (`virterror.h`).
#[repr(C)]
struct VirErrorRaw {
    code: c_int,
    domain: c_int,
    message: *mut c_char,
    level: c_int,
    conn: *mut VirConnect,
    dom: *mut VirDomain,
    str1: *mut c_char,
    str2: *mut c_char,
    str3: *mut c_char,
    int1: c_int,
    int2: c_int,
    net: *mut c_void,
}

/// `struct _virDomainInfo` (`libvirt-domain.h`).
#[repr(C)]
struct VirDomainInfo {
    state: c_uchar,
    max_mem: c_ulong,
    memory: c_ulong,
    nr_virt_cpu: c_ushort,
    cpu_time: c_ulonglong,
}

/// `struct _virDomainInterfaceIPAddress`.
#[repr(C)]
struct VirDomainIpAddress {
    kind: c_int,
    addr: *mut c_char,
    prefix: c_uint,
}

/// `struct _virDomainInterface`.
#[repr(C)]
struct VirDomainInterface {
    name: *mut c_char,
    hwaddr: *mut c_char,
    naddrs: c_uint,
    addrs: *mut VirDomainIpAddress,
}

/// `virErrorFunc`.
type ErrorFunc = unsafe extern "C" fn(*mut c_void, *mut VirErrorRaw);

/// `virConnectDomainEventCallback`, the lifecycle event's callback, passed to
/// `virConnectDomainEventRegisterAny` in the place of its generic callback (as libvirt's
/// `VIR_DOMAIN_EVENT_CALLBACK` cast does).
type LifecycleFunc =
    unsafe extern "C" fn(*mut VirConnect, *mut VirDomain, c_int, c_int, *mut c_void) -> c_int;
/// `virEventTimeoutCallback`.
type TimeoutFunc = unsafe extern "C" fn(c_int, *mut c_void);
/// `virFreeCallback`.
type FreeFunc = unsafe extern "C" fn(*mut c_void);

/// `VIR_DOMAIN_EVENT_ID_LIFECYCLE` (`virDomainEventID`).
const VIR_DOMAIN_EVENT_ID_LIFECYCLE: c_int = 0;
/// How often libvirt's event loop returns with no event, so that its caller can look at its
/// own flags and at the connection.
const EVENT_LOOP_TICK_MS: c_int = 250;

/// The table of libvirt's functions, each field filled by `dlsym` of the symbol beside it.
macro_rules! functions {
    ($($field:ident = $symbol:literal: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// libvirt's functions, resolved.
        struct Functions {
            $($field: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Functions {
            /// Resolves every function in `handle`, or names the first one missing.
            ///
            /// # Safety
            /// `handle` is a live handle from `dlopen`, of a library whose symbols of these
            /// names have these signatures (libvirt's).
            unsafe fn resolve(handle: NonNull<c_void>, library: &str) -> Result<Self, LoadError> {
                Ok(Self {
                    $($field: {
                        // SAFETY: the caller vouches for the handle; the symbol is a function
                        // of this signature in every libvirt that has it (libvirt's headers).
                        let symbol = unsafe { symbol(handle, library, $symbol)? };
                        // SAFETY: a function's address and a function pointer have the same
                        // size and representation on the platforms `dlsym` serves.
                        unsafe {
                            std::mem::transmute::<
                                NonNull<c_void>,
                                unsafe extern "C" fn($($arg),*) $(-> $ret)?,
                            >(symbol)
                        }
                    },)*
                })
            }
        }
    };
}

functions! {
    connect_open = c"virConnectOpen": fn(*const c_char) -> *mut VirConnect;
    connect_close = c"virConnectClose": fn(*mut VirConnect) -> c_int;
    connect_is_alive = c"virConnectIsAlive": fn(*mut VirConnect) -> c_int;
    connect_list_all_domains = c"virConnectListAllDomains":
        fn(*mut VirConnect, *mut *mut *mut VirDomain, c_uint) -> c_int;
    domain_lookup_by_name = c"virDomainLookupByName":
        fn(*mut VirConnect, *const c_char) -> *mut VirDomain;
    domain_define_xml = c"virDomainDefineXML":
        fn(*mut VirConnect, *const c_char) -> *mut VirDomain;
    domain_free = c"virDomainFree": fn(*mut VirDomain) -> c_int;
    domain_get_name = c"virDomainGetName": fn(*mut VirDomain) -> *const c_char;
    domain_get_state = c"virDomainGetState":
        fn(*mut VirDomain, *mut c_int, *mut c_int, c_uint) -> c_int;
    domain_get_info = c"virDomainGetInfo": fn(*mut VirDomain, *mut VirDomainInfo) -> c_int;
    domain_get_xml_desc = c"virDomainGetXMLDesc": fn(*mut VirDomain, c_uint) -> *mut c_char;
    domain_get_metadata = c"virDomainGetMetadata":
        fn(*mut VirDomain, c_int, *const c_char, c_uint) -> *mut c_char;
    domain_interface_addresses = c"virDomainInterfaceAddresses":
        fn(*mut VirDomain, *mut *mut *mut VirDomainInterface, c_uint, c_uint) -> c_int;
    domain_interface_free = c"virDomainInterfaceFree": fn(*mut VirDomainInterface);
    domain_suspend = c"virDomainSuspend": fn(*mut VirDomain) -> c_int;
    domain_resume = c"virDomainResume": fn(*mut VirDomain) -> c_int;
    domain_managed_save = c"virDomainManagedSave": fn(*mut VirDomain, c_uint) -> c_int;
    domain_has_managed_save_image = c"virDomainHasManagedSaveImage":
        fn(*mut VirDomain, c_uint) -> c_int;
    domain_create = c"virDomainCreate": fn(*mut VirDomain) -> c_int;
    domain_destroy = c"virDomainDestroy": fn(*mut VirDomain) -> c_int;
    domain_get_time = c"virDomainGetTime":
        fn(*mut VirDomain, *mut c_longlong, *mut c_uint, c_uint) -> c_int;
    domain_set_time = c"virDomainSetTime": fn(*mut VirDomain, c_longlong, c_uint, c_uint) -> c_int;
    domain_undefine = c"virDomainUndefine": fn(*mut VirDomain) -> c_int;
    event_register_default_impl = c"virEventRegisterDefaultImpl": fn() -> c_int;
    event_run_default_impl = c"virEventRunDefaultImpl": fn() -> c_int;
    event_add_timeout = c"virEventAddTimeout":
        fn(c_int, Option<TimeoutFunc>, *mut c_void, Option<FreeFunc>) -> c_int;
    connect_domain_event_register_any = c"virConnectDomainEventRegisterAny":
        fn(*mut VirConnect, *mut VirDomain, c_int, Option<LifecycleFunc>, *mut c_void, Option<FreeFunc>)
            -> c_int;
    connect_domain_event_deregister_any = c"virConnectDomainEventDeregisterAny":
        fn(*mut VirConnect, c_int) -> c_int;
    get_last_error = c"virGetLastError": fn() -> *mut VirErrorRaw;
    set_error_func = c"virSetErrorFunc": fn(*mut c_void, Option<ErrorFunc>);
}

/// libvirt could not be loaded: what is missing, and how to get it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The library itself.
    #[error("libvirt guests need {library}, which could not be loaded ({reason}): apt-get install libvirt0")]
    Library {
        /// The file asked for (`libvirt.so.0`).
        library: String,
        /// What the dynamic linker said.
        reason: String,
    },
    /// A function the library lacks (a libvirt older than 1.2.14).
    #[error("libvirt guests need the function {symbol} of {library}, which the libvirt installed lacks ({reason}): install libvirt 1.2.14 or later")]
    Symbol {
        /// The file loaded.
        library: String,
        /// The function.
        symbol: &'static str,
        /// What the dynamic linker said.
        reason: String,
    },
}

/// libvirt's functions, once loaded.
static LOADED: OnceLock<Functions> = OnceLock::new();

/// The library of libvirt's QEMU-specific calls (the guest agent's), in the same package.
const LIBVIRT_QEMU: &CStr = c"libvirt-qemu.so.0";

/// `virDomainQemuAgentCommand`.
type AgentCommandFunc =
    unsafe extern "C" fn(*mut VirDomain, *const c_char, c_int, c_uint) -> *mut c_char;

/// `virDomainQemuAgentCommand`, once loaded (the first guest agent command).
static AGENT_COMMAND: OnceLock<AgentCommandFunc> = OnceLock::new();

/// `virDomainQemuAgentCommand`, loading `libvirt-qemu.so.0` the first time. A failure is
/// not remembered.
fn agent_command_function() -> Result<AgentCommandFunc, LoadError> {
    if let Some(f) = AGENT_COMMAND.get() {
        return Ok(*f);
    }
    let name = LIBVIRT_QEMU.to_string_lossy().into_owned();
    // SAFETY: a NUL-terminated name; loading runs the library's constructors, as linking
    // it would. It stays loaded.
    let handle = unsafe { libc::dlopen(LIBVIRT_QEMU.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let Some(handle) = NonNull::new(handle) else {
        return Err(LoadError::Library {
            library: name,
            reason: dlerror(),
        });
    };
    // SAFETY: a live handle.
    let address = unsafe { symbol(handle, &name, c"virDomainQemuAgentCommand")? };
    // SAFETY: the symbol is libvirt's function of this signature (libvirt-qemu.h); a
    // function's address and a function pointer have the same representation.
    let f = unsafe { std::mem::transmute::<NonNull<c_void>, AgentCommandFunc>(address) };
    Ok(*AGENT_COMMAND.get_or_init(|| f))
}

/// What `dlerror` says about the last failure of `dlopen` or `dlsym` on this thread.
fn dlerror() -> String {
    // SAFETY: dlerror takes nothing; it returns null or a string valid until the next dl*
    // call on this thread, copied at once.
    let text = unsafe { libc::dlerror() };
    if text.is_null() {
        "no reason given".to_owned()
    } else {
        // SAFETY: not null, so a NUL-terminated string (see above).
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The address of `name` in `handle`.
///
/// # Safety
/// `handle` is a live handle from `dlopen`.
unsafe fn symbol(
    handle: NonNull<c_void>,
    library: &str,
    name: &'static CStr,
) -> Result<NonNull<c_void>, LoadError> {
    // SAFETY: the caller vouches for the handle; `name` is NUL-terminated. dlerror is called
    // first to clear a stale error.
    let address = unsafe {
        libc::dlerror();
        libc::dlsym(handle.as_ptr(), name.as_ptr())
    };
    NonNull::new(address).ok_or_else(|| LoadError::Symbol {
        library: library.to_owned(),
        symbol: name.to_str().expect("the names above are ASCII"),
        reason: dlerror(),
    })
}

/// Loads `library` and resolves libvirt's functions in it. The library stays loaded, even if
/// a function is missing.
fn load(library: &CStr) -> Result<Functions, LoadError> {
    let name = library.to_string_lossy().into_owned();
    // SAFETY: `library` is NUL-terminated. Loading libvirt runs its constructors and those of
    // its dependencies, which is what linking it did.
    let handle = unsafe { libc::dlopen(library.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let Some(handle) = NonNull::new(handle) else {
        return Err(LoadError::Library {
            library: name,
            reason: dlerror(),
        });
    };
    // SAFETY: a live handle; what it holds by these names are libvirt's functions.
    let functions = unsafe { Functions::resolve(handle, &name)? };
    // Every failure comes back as a value, with its message, and is reported by whoever
    // called: libvirt's default handler would also print it on stderr, in the middle of the
    // daemon's log, including the failures that are expected (a domain without vmnap's
    // metadata element).
    // SAFETY: a handler that does nothing, for the whole process; no user data.
    unsafe { (functions.set_error_func)(ptr::null_mut(), Some(ignore_error)) };
    Ok(functions)
}

/// A `virErrorFunc` that leaves the error to be read with `virGetLastError`.
unsafe extern "C" fn ignore_error(_data: *mut c_void, _error: *mut VirErrorRaw) {}

/// libvirt's functions, loading the library the first time. A failure is not remembered: a
/// later call (a reload, once libvirt is installed) tries again.
fn functions() -> Result<&'static Functions, LoadError> {
    if let Some(f) = LOADED.get() {
        return Ok(f);
    }
    let loaded = load(LIBVIRT)?;
    // Two threads may both have loaded it: the library is loaded once, and either table
    // serves.
    Ok(LOADED.get_or_init(|| loaded))
}

/// An error libvirt reported (`virGetLastError`), or one about an argument that could not be
/// handed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirError {
    code: i32,
    domain: i32,
    level: i32,
    message: String,
}

impl VirError {
    /// The calling thread's last libvirt error, right after a call failed.
    fn last(f: &Functions) -> Self {
        // SAFETY: no arguments; the result is null or this thread's error, read at once.
        let raw = unsafe { (f.get_last_error)() };
        // SAFETY: not null, so a `virError` that libvirt owns and keeps until the next call
        // on this thread.
        match unsafe { raw.as_ref() } {
            None => Self {
                code: VIR_ERR_INTERNAL_ERROR,
                domain: 0,
                level: VIR_ERR_ERROR,
                message: "an unknown libvirt error occurred".to_owned(),
            },
            Some(e) => Self {
                code: e.code,
                domain: e.domain,
                level: e.level,
                // SAFETY: a message is null or a NUL-terminated string.
                message: unsafe { string(e.message) }
                    .unwrap_or_else(|| "libvirt gave no message".to_owned()),
            },
        }
    }

    /// An argument with a NUL byte in it, which no C string can carry.
    fn nul(what: &str) -> Self {
        Self {
            code: VIR_ERR_INVALID_ARG,
            domain: 0,
            level: VIR_ERR_ERROR,
            message: format!("{what} contains a NUL byte"),
        }
    }

    /// The connection was lost (`virConnectIsAlive` said so).
    pub(crate) fn lost() -> Self {
        Self {
            code: VIR_ERR_INTERNAL_ERROR,
            domain: 0,
            level: VIR_ERR_ERROR,
            message: "the connection to libvirt was lost".to_owned(),
        }
    }

    /// libvirt's error number (`virErrorNumber`: 42 is `VIR_ERR_NO_DOMAIN`, ...).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The part of libvirt that raised it (`virErrorDomain`).
    pub fn domain(&self) -> i32 {
        self.domain
    }

    /// `virErrorLevel`: 1 a warning, 2 an error.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// libvirt's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for VirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [code={}, domain={}]",
            self.message, self.code, self.domain
        )
    }
}

impl std::error::Error for VirError {}

/// A copy of the C string `text`, if not null.
///
/// # Safety
/// `text` is null or a NUL-terminated string.
unsafe fn string(text: *const c_char) -> Option<String> {
    // SAFETY: the caller's promise.
    (!text.is_null()).then(|| {
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    })
}

/// A copy of the C string `text`, which is then freed as libvirt documents (`free`).
///
/// # Safety
/// `text` is null or a NUL-terminated string allocated with `malloc`, owned by the caller.
unsafe fn take_string(text: *mut c_char) -> Option<String> {
    // SAFETY: the caller's promise.
    let copy = unsafe { string(text) };
    // SAFETY: the caller owns it; free(NULL) does nothing.
    unsafe { libc::free(text.cast()) };
    copy
}

fn c_string(text: &str, what: &str) -> Result<CString, VirError> {
    CString::new(text).map_err(|_| VirError::nul(what))
}

/// A connection to libvirt (`virConnectPtr`), closed when dropped.
pub struct Connect {
    f: &'static Functions,
    ptr: NonNull<VirConnect>,
}

// SAFETY: libvirt's connections may be used from any thread, and from several at once
// (libvirt is thread-safe since 0.6.0; errors are kept per thread).
unsafe impl Send for Connect {}
// SAFETY: as above.
unsafe impl Sync for Connect {}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Connect").field(&self.ptr).finish()
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        // SAFETY: ours, closed once. Domains looked up through it hold their own reference
        // to the connection, so they stay usable. Its result (the references left, or -1) is
        // nothing to act on.
        unsafe { (self.f.connect_close)(self.ptr.as_ptr()) };
    }
}

impl Connect {
    /// Connects to libvirt at `uri` (`virConnectOpen`), loading libvirt if this is the
    /// process's first connection.
    pub fn open(uri: &str) -> Result<Self, LibvirtError> {
        let f = functions()?;
        let refused = |source| LibvirtError::Connect {
            uri: uri.to_owned(),
            source,
        };
        let c_uri = c_string(uri, "the URI").map_err(refused)?;
        // SAFETY: a NUL-terminated string that outlives the call.
        let ptr = unsafe { (f.connect_open)(c_uri.as_ptr()) };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Self { f, ptr }),
            None => Err(refused(VirError::last(f))),
        }
    }

    /// Whether the connection still works (`virConnectIsAlive`).
    pub fn is_alive(&self) -> Result<bool, VirError> {
        // SAFETY: a live connection.
        match unsafe { (self.f.connect_is_alive)(self.ptr.as_ptr()) } {
            -1 => Err(VirError::last(self.f)),
            n => Ok(n == 1),
        }
    }

    /// Every domain, running or not (`virConnectListAllDomains`).
    pub fn list_all_domains(&self) -> Result<Vec<Domain>, VirError> {
        let mut array: *mut *mut VirDomain = ptr::null_mut();
        // SAFETY: a live connection and a place for the array, which becomes ours.
        let n = unsafe { (self.f.connect_list_all_domains)(self.ptr.as_ptr(), &mut array, 0) };
        let Ok(n) = usize::try_from(n) else {
            return Err(VirError::last(self.f));
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: the array has `n` entries.
            let d = unsafe { *array.add(i) };
            // Each entry is a domain reference of ours, freed by its `Domain`.
            out.extend(NonNull::new(d).map(|ptr| Domain { f: self.f, ptr }));
        }
        // SAFETY: the array itself is ours to free (libvirt's documentation); null if `n` is 0.
        unsafe { libc::free(array.cast()) };
        Ok(out)
    }

    /// The domain named `name` (`virDomainLookupByName`).
    pub fn lookup_domain(&self, name: &str) -> Result<Domain, VirError> {
        let c_name = c_string(name, "the domain's name")?;
        // SAFETY: a live connection and a string that outlives the call.
        let ptr = unsafe { (self.f.domain_lookup_by_name)(self.ptr.as_ptr(), c_name.as_ptr()) };
        self.domain(ptr)
    }

    /// Defines a persistent domain from its XML, without starting it (`virDomainDefineXML`).
    pub fn define_domain(&self, xml: &str) -> Result<Domain, VirError> {
        let c_xml = c_string(xml, "the domain's XML")?;
        // SAFETY: a live connection and a string that outlives the call.
        let ptr = unsafe { (self.f.domain_define_xml)(self.ptr.as_ptr(), c_xml.as_ptr()) };
        self.domain(ptr)
    }

    fn domain(&self, ptr: *mut VirDomain) -> Result<Domain, VirError> {
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Domain { f: self.f, ptr }),
            None => Err(VirError::last(self.f)),
        }
    }
}

/// What `virDomainGetInfo` says about a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    /// Its state (`virDomainState`).
    pub state: u32,
    /// The most memory it may have, in KiB.
    pub max_memory_kib: u64,
    /// The memory it has, in KiB.
    pub memory_kib: u64,
    /// Its virtual CPUs.
    pub vcpus: u32,
    /// The CPU time it has used, in nanoseconds.
    pub cpu_time_ns: u64,
}

/// An interface of a domain with its addresses (`virDomainInterfaceAddresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddresses {
    /// The interface's name.
    pub name: String,
    /// Its MAC, as libvirt writes it, if known.
    pub hwaddr: Option<String>,
    /// Its addresses, as libvirt writes them, each with its prefix length.
    pub addrs: Vec<(String, u32)>,
}

/// A domain (`virDomainPtr`), freed when dropped (`virDomainFree`; the domain itself stays).
pub struct Domain {
    f: &'static Functions,
    ptr: NonNull<VirDomain>,
}

// SAFETY: as for `Connect`: libvirt's objects may be used from any thread.
unsafe impl Send for Domain {}
// SAFETY: as above.
unsafe impl Sync for Domain {}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Domain").field(&self.ptr).finish()
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: our reference, freed once; a failure leaves nothing to do.
        unsafe { (self.f.domain_free)(self.ptr.as_ptr()) };
    }
}

impl Domain {
    /// Runs a call that returns 0 (or more) on success and -1 on failure.
    fn status(
        &self,
        call: unsafe extern "C" fn(*mut VirDomain) -> c_int,
    ) -> Result<c_int, VirError> {
        // SAFETY: `call` is one of libvirt's functions that take only a domain, and this one
        // is live.
        match unsafe { call(self.ptr.as_ptr()) } {
            -1 => Err(VirError::last(self.f)),
            n => Ok(n),
        }
    }

    /// Runs a call that returns a string the caller frees, or null on failure.
    fn text(&self, call: impl FnOnce(*mut VirDomain) -> *mut c_char) -> Result<String, VirError> {
        let text = call(self.ptr.as_ptr());
        // SAFETY: null or a string that libvirt's documentation gives to the caller to free.
        unsafe { take_string(text) }.ok_or_else(|| VirError::last(self.f))
    }

    /// Its name (`virDomainGetName`).
    pub fn name(&self) -> Result<String, VirError> {
        // SAFETY: a live domain; the name, if any, is the domain's and lives as long as it.
        unsafe { string((self.f.domain_get_name)(self.ptr.as_ptr())) }
            .ok_or_else(|| VirError::last(self.f))
    }

    /// Its state (`virDomainGetState`: a `virDomainState`).
    pub fn state(&self) -> Result<u32, VirError> {
        let (mut state, mut reason): (c_int, c_int) = (-1, -1);
        // SAFETY: a live domain and two places for ints.
        match unsafe { (self.f.domain_get_state)(self.ptr.as_ptr(), &mut state, &mut reason, 0) } {
            -1 => Err(VirError::last(self.f)),
            _ => Ok(u32::try_from(state).unwrap_or(u32::MAX)),
        }
    }

    /// Its state, memory and CPU time (`virDomainGetInfo`).
    pub fn info(&self) -> Result<DomainInfo, VirError> {
        let mut info = VirDomainInfo {
            state: 0,
            max_mem: 0,
            memory: 0,
            nr_virt_cpu: 0,
            cpu_time: 0,
        };
        // SAFETY: a live domain and a whole `virDomainInfo` to fill.
        match unsafe { (self.f.domain_get_info)(self.ptr.as_ptr(), &mut info) } {
            -1 => Err(VirError::last(self.f)),
            // `c_ulong` is `u64` here, `u32` on 32-bit targets.
            #[allow(clippy::useless_conversion)]
            _ => Ok(DomainInfo {
                state: u32::from(info.state),
                max_memory_kib: u64::from(info.max_mem),
                memory_kib: u64::from(info.memory),
                vcpus: u32::from(info.nr_virt_cpu),
                cpu_time_ns: info.cpu_time,
            }),
        }
    }

    /// Its live XML description (`virDomainGetXMLDesc` without flags).
    pub fn xml_desc(&self) -> Result<String, VirError> {
        // SAFETY: a live domain.
        self.text(|d| unsafe { (self.f.domain_get_xml_desc)(d, 0) })
    }

    /// Its `<metadata>` element in the XML namespace `uri`, as XML
    /// (`virDomainGetMetadata(VIR_DOMAIN_METADATA_ELEMENT)`); an error
    /// (`VIR_ERR_NO_DOMAIN_METADATA`) if it has none.
    pub fn metadata_element(&self, uri: &str) -> Result<String, VirError> {
        let c_uri = c_string(uri, "the metadata namespace")?;
        // SAFETY: a live domain and a string that outlives the call.
        self.text(|d| unsafe {
            (self.f.domain_get_metadata)(d, VIR_DOMAIN_METADATA_ELEMENT, c_uri.as_ptr(), 0)
        })
    }

    /// Its interfaces with the addresses libvirt's DHCP leases give them
    /// (`virDomainInterfaceAddresses(VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)`).
    pub fn leased_addresses(&self) -> Result<Vec<InterfaceAddresses>, VirError> {
        let mut array: *mut *mut VirDomainInterface = ptr::null_mut();
        // SAFETY: a live domain and a place for the array, which becomes ours.
        let n = unsafe {
            (self.f.domain_interface_addresses)(
                self.ptr.as_ptr(),
                &mut array,
                VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
                0,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Err(VirError::last(self.f));
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: the array has `n` entries.
            let iface = unsafe { *array.add(i) };
            // SAFETY: each entry is null or an interface of ours, read and then freed once
            // with `virDomainInterfaceFree`, as libvirt documents.
            if let Some(iface) = unsafe { iface.as_ref() } {
                // SAFETY: its strings are null or NUL-terminated; `addrs` has `naddrs` entries.
                unsafe {
                    let addrs = (0..iface.naddrs as usize)
                        .filter_map(|j| {
                            let a = &*iface.addrs.add(j);
                            string(a.addr).map(|s| (s, a.prefix))
                        })
                        .collect();
                    out.push(InterfaceAddresses {
                        name: string(iface.name).unwrap_or_default(),
                        hwaddr: string(iface.hwaddr),
                        addrs,
                    });
                }
            }
            // SAFETY: as above; virDomainInterfaceFree(NULL) does nothing.
            unsafe { (self.f.domain_interface_free)(iface) };
        }
        // SAFETY: the array itself is ours to free (libvirt's documentation).
        unsafe { libc::free(array.cast()) };
        Ok(out)
    }

    /// Pauses it (`virDomainSuspend`).
    pub fn suspend(&self) -> Result<(), VirError> {
        self.status(self.f.domain_suspend).map(drop)
    }

    /// Continues it (`virDomainResume`).
    pub fn resume(&self) -> Result<(), VirError> {
        self.status(self.f.domain_resume).map(drop)
    }

    /// Saves it to libvirt's managed save image; its process ends (`virDomainManagedSave`).
    pub fn managed_save(&self) -> Result<(), VirError> {
        // SAFETY: a live domain.
        match unsafe { (self.f.domain_managed_save)(self.ptr.as_ptr(), 0) } {
            -1 => Err(VirError::last(self.f)),
            _ => Ok(()),
        }
    }

    /// Whether it has a managed save image (`virDomainHasManagedSaveImage`).
    pub fn has_managed_save(&self) -> Result<bool, VirError> {
        // SAFETY: a live domain.
        match unsafe { (self.f.domain_has_managed_save_image)(self.ptr.as_ptr(), 0) } {
            -1 => Err(VirError::last(self.f)),
            n => Ok(n == 1),
        }
    }

    /// Starts it, from its managed save image if it has one (`virDomainCreate`).
    pub fn create(&self) -> Result<(), VirError> {
        self.status(self.f.domain_create).map(drop)
    }

    /// Its guest's clock, through its guest agent (`virDomainGetTime`), since the Unix
    /// epoch.
    pub fn time(&self) -> Result<std::time::Duration, VirError> {
        let (mut seconds, mut nanos): (c_longlong, c_uint) = (0, 0);
        // SAFETY: a live domain and two places for the time.
        match unsafe { (self.f.domain_get_time)(self.ptr.as_ptr(), &mut seconds, &mut nanos, 0) } {
            -1 => Err(VirError::last(self.f)),
            _ => Ok(std::time::Duration::new(
                u64::try_from(seconds).unwrap_or(0),
                nanos,
            )),
        }
    }

    /// Sets its guest's clock to `since_epoch`, through its guest agent
    /// (`virDomainSetTime`).
    pub fn set_time(&self, since_epoch: std::time::Duration) -> Result<(), VirError> {
        let seconds = c_longlong::try_from(since_epoch.as_secs()).unwrap_or(c_longlong::MAX);
        // SAFETY: a live domain; the time is passed by value.
        match unsafe {
            (self.f.domain_set_time)(self.ptr.as_ptr(), seconds, since_epoch.subsec_nanos(), 0)
        } {
            -1 => Err(VirError::last(self.f)),
            _ => Ok(()),
        }
    }

    /// Sends `command` (a JSON object of the QEMU guest agent's protocol) to its guest
    /// agent and returns the agent's answer (`virDomainQemuAgentCommand`), waiting at most
    /// `timeout_s` seconds.
    pub fn agent_command(&self, command: &str, timeout_s: i32) -> Result<String, VirError> {
        let call = agent_command_function().map_err(|e| VirError {
            code: VIR_ERR_INTERNAL_ERROR,
            domain: 0,
            level: VIR_ERR_ERROR,
            message: e.to_string(),
        })?;
        let c_command = c_string(command, "the agent command")?;
        // SAFETY: a live domain, a string that outlives the call; the answer is ours to
        // free (libvirt's documentation), which `text` does.
        self.text(|d| unsafe { call(d, c_command.as_ptr(), timeout_s, 0) })
    }

    /// Stops it at once, as pulling the plug would (`virDomainDestroy`).
    pub fn destroy(&self) -> Result<(), VirError> {
        self.status(self.f.domain_destroy).map(drop)
    }

    /// Removes its definition (`virDomainUndefine`).
    pub fn undefine(&self) -> Result<(), VirError> {
        self.status(self.f.domain_undefine).map(drop)
    }
}

/// What libvirt's event loop hands a lifecycle callback: the domain's name, the event and
/// its detail (`virDomainEventType` and its `virDomainEvent*DetailType`).
pub(crate) type LifecycleSink = Box<dyn Fn(String, i32, i32) + Send>;

/// Whether libvirt's default event loop is registered (`virEventRegisterDefaultImpl`), once
/// for the process, with a timer that makes each run of it return within
/// [`EVENT_LOOP_TICK_MS`].
static EVENT_LOOP: OnceLock<Result<(), VirError>> = OnceLock::new();

/// A `virEventTimeoutCallback` that does nothing: the timer only ends the loop's wait.
unsafe extern "C" fn tick(_timer: c_int, _opaque: *mut c_void) {}

/// Registers libvirt's default event loop, once. Connections opened before it get no
/// events; those opened after are kept alive by it, so whoever registers it runs it
/// ([`run_event_loop`]) for as long as the process uses libvirt.
fn event_loop(f: &'static Functions) -> Result<(), VirError> {
    EVENT_LOOP
        .get_or_init(|| {
            // SAFETY: no arguments; registers libvirt's own poll loop for the process.
            if unsafe { (f.event_register_default_impl)() } < 0 {
                return Err(VirError::last(f));
            }
            // SAFETY: a callback that ignores its arguments, no data to free.
            if unsafe {
                (f.event_add_timeout)(EVENT_LOOP_TICK_MS, Some(tick), ptr::null_mut(), None)
            } < 0
            {
                return Err(VirError::last(f));
            }
            Ok(())
        })
        .clone()
}

/// Runs one turn of libvirt's event loop (`virEventRunDefaultImpl`): dispatches what has
/// come, waiting at most about [`EVENT_LOOP_TICK_MS`] for something to come. Only after a
/// [`LifecycleWatch`] was opened.
pub(crate) fn run_event_loop() -> Result<(), VirError> {
    let f = functions().map_err(|e| VirError {
        code: VIR_ERR_INTERNAL_ERROR,
        domain: 0,
        level: VIR_ERR_ERROR,
        message: e.to_string(),
    })?;
    // SAFETY: the loop was registered (a watch exists); the callbacks it runs are ours.
    match unsafe { (f.event_run_default_impl)() } {
        -1 => Err(VirError::last(f)),
        _ => Ok(()),
    }
}

/// The lifecycle callback: hands the event to the watch's sink.
unsafe extern "C" fn on_lifecycle(
    _conn: *mut VirConnect,
    dom: *mut VirDomain,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let (Some(f), Some(sink)) = (LOADED.get(), NonNull::new(opaque.cast::<LifecycleSink>())) else {
        return 0;
    };
    // SAFETY: `dom` is a live domain for the call (libvirt's); its name lives as long.
    let name = unsafe { string((f.domain_get_name)(dom)) };
    if let Some(name) = name {
        // SAFETY: `opaque` is the sink boxed at registration, freed only by `free_sink`
        // after the callback is deregistered.
        let sink = unsafe { sink.as_ref() };
        sink(name, event, detail);
    }
    0
}

/// Frees a lifecycle callback's sink, once libvirt no longer calls it.
unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: the pointer `Box::into_raw` made at registration, freed once, here.
        drop(unsafe { Box::from_raw(opaque.cast::<LifecycleSink>()) });
    }
}

/// A connection whose domains' lifecycle events (started, stopped, defined, undefined, ...)
/// go to a sink while libvirt's event loop runs; deregistered when dropped.
pub struct LifecycleWatch {
    conn: Connect,
    id: c_int,
}

impl fmt::Debug for LifecycleWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleWatch")
            .field("conn", &self.conn)
            .field("id", &self.id)
            .finish()
    }
}

impl LifecycleWatch {
    /// Registers libvirt's event loop (once), connects to `uri` and subscribes to the
    /// lifecycle events of all its domains.
    pub(crate) fn open(uri: &str, sink: LifecycleSink) -> Result<Self, LibvirtError> {
        let f = functions()?;
        event_loop(f).map_err(|source| LibvirtError::Connect {
            uri: uri.to_owned(),
            source,
        })?;
        let conn = Connect::open(uri)?;
        let opaque = Box::into_raw(Box::new(sink));
        // SAFETY: a live connection, no domain (all of them), the lifecycle callback for the
        // lifecycle event, and its sink, which libvirt frees with `free_sink`.
        let id = unsafe {
            (f.connect_domain_event_register_any)(
                conn.ptr.as_ptr(),
                ptr::null_mut(),
                VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                Some(on_lifecycle),
                opaque.cast(),
                Some(free_sink),
            )
        };
        if id < 0 {
            let source = VirError::last(f);
            // SAFETY: libvirt did not take the sink: ours to free.
            drop(unsafe { Box::from_raw(opaque) });
            return Err(LibvirtError::Connect {
                uri: uri.to_owned(),
                source,
            });
        }
        Ok(Self { conn, id })
    }

    /// Whether its connection still works.
    pub fn is_alive(&self) -> bool {
        self.conn.is_alive().unwrap_or(false)
    }
}

impl Drop for LifecycleWatch {
    fn drop(&mut self) {
        // SAFETY: a live connection and the callback registered on it; libvirt frees the
        // sink. A connection already lost fails here, and frees it when it closes.
        unsafe {
            (self.conn.f.connect_domain_event_deregister_any)(self.conn.ptr.as_ptr(), self.id)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_that_is_not_there_is_named_with_how_to_get_it() {
        let Err(e) = load(c"libvirt-not-installed.so.0") else {
            panic!("loaded a library that does not exist");
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "libvirt guests need libvirt-not-installed.so.0, which could not be loaded ("
            ) && text.contains("No such file")
                && text.ends_with("): apt-get install libvirt0"),
            "{text}"
        );
    }

    #[test]
    fn a_library_without_libvirt_functions_names_the_first_missing() {
        // The C library is loaded already and has none of libvirt's functions.
        let Err(e) = load(c"libc.so.6") else {
            panic!("libc has libvirt's functions");
        };
        assert!(
            matches!(
                e,
                LoadError::Symbol {
                    symbol: "virConnectOpen",
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("the function virConnectOpen of libc.so.6")
                && text.ends_with("install libvirt 1.2.14 or later"),
            "{text}"
        );
    }

    #[test]
    fn a_nul_in_an_argument_is_refused_before_libvirt_sees_it() {
        let e = c_string("a\0b", "the domain's name").unwrap_err();
        assert_eq!(e.code(), VIR_ERR_INVALID_ARG);
        assert_eq!(
            e.to_string(),
            "the domain's name contains a NUL byte [code=8, domain=0]"
        );
    }
}
