//! Finding the domains of a connection that vmnap should stand in for, with what their XML,
//! their metadata element and libvirt's DHCP leases say about them.

use std::net::IpAddr;

use roxmltree::Document;

use crate::{parse_interfaces, Connect, Domain, DomainInterface, DomainState, LibvirtError};

/// Which domains [`list_domains`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every domain.
    All,
    /// The domains whose `<metadata>` holds an element in this XML namespace (what
    /// `virDomainGetMetadata(VIR_DOMAIN_METADATA_ELEMENT, uri)` returns).
    Metadata(String),
}

/// What a domain's metadata element says, as written: each an attribute of the element
/// (lists separated by whitespace). Checking the values is the config's business.
///
/// ```xml
/// <vmnap:guest xmlns:vmnap="https://example.org/vmnap" name="web3" mode="save"
///     ipv4="198.18.0.40" ipv6="2001:db8::40" wake_on="tcp/80 tcp/22"
///     answer="arp ndp icmp-echo" idle_after="5m" keep_awake_while_connected="tcp/22"
///     min_awake="10m" max_sleep="24h" inhibit_file="/run/vmnap-inhibit"/>
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestMetadata {
    /// `name`.
    pub name: Option<String>,
    /// `mode`.
    pub mode: Option<String>,
    /// `ipv4`.
    pub ipv4: Vec<String>,
    /// `ipv6`.
    pub ipv6: Vec<String>,
    /// `wake_on`.
    pub wake_on: Option<Vec<String>>,
    /// `answer`.
    pub answer: Option<Vec<String>>,
    /// `idle_after`.
    pub idle_after: Option<String>,
    /// `keep_awake_while_connected`.
    pub keep_awake_while_connected: Option<Vec<String>>,
    /// `min_awake`.
    pub min_awake: Option<String>,
    /// `max_sleep`.
    pub max_sleep: Option<String>,
    /// `inhibit_file`.
    pub inhibit_file: Option<String>,
}

/// The attributes [`parse_metadata`] knows.
pub const METADATA_ATTRIBUTES: [&str; 11] = [
    "name",
    "mode",
    "ipv4",
    "ipv6",
    "wake_on",
    "answer",
    "idle_after",
    "keep_awake_while_connected",
    "min_awake",
    "max_sleep",
    "inhibit_file",
];

/// The metadata element is not one vmnap can read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Not well-formed XML.
    #[error("the metadata element is not well-formed XML")]
    Syntax(#[source] roxmltree::Error),
    /// An attribute vmnap does not know.
    #[error("unknown attribute `{0}` in the metadata element; expected one of name, mode, ipv4, ipv6, wake_on, answer, idle_after, keep_awake_while_connected, min_awake, max_sleep, inhibit_file")]
    UnknownAttribute(String),
    /// A child element: settings are attributes.
    #[error("the metadata element has a child <{0}>; vmnap's settings are attributes of the element itself")]
    Child(String),
}

/// The settings in a metadata element (the element's own XML, as
/// `virDomainGetMetadata` returns it).
pub fn parse_metadata(xml: &str) -> Result<GuestMetadata, MetadataError> {
    let doc = Document::parse(xml).map_err(MetadataError::Syntax)?;
    let root = doc.root_element();
    if let Some(child) = root.children().find(|n| n.is_element()) {
        return Err(MetadataError::Child(child.tag_name().name().to_string()));
    }
    let mut m = GuestMetadata::default();
    let list = |v: &str| v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    for a in root.attributes() {
        if a.namespace().is_some() {
            return Err(MetadataError::UnknownAttribute(a.name().to_string()));
        }
        let v = a.value();
        match a.name() {
            "name" => m.name = Some(v.to_string()),
            "mode" => m.mode = Some(v.to_string()),
            "ipv4" => m.ipv4 = list(v),
            "ipv6" => m.ipv6 = list(v),
            "wake_on" => m.wake_on = Some(list(v)),
            "answer" => m.answer = Some(list(v)),
            "idle_after" => m.idle_after = Some(v.to_string()),
            "keep_awake_while_connected" => m.keep_awake_while_connected = Some(list(v)),
            "min_awake" => m.min_awake = Some(v.to_string()),
            "max_sleep" => m.max_sleep = Some(v.to_string()),
            "inhibit_file" => m.inhibit_file = Some(v.to_string()),
            other => return Err(MetadataError::UnknownAttribute(other.to_string())),
        }
    }
    Ok(m)
}

/// An address libvirt's DHCP server leased to one of a domain's interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The interface's MAC.
    pub mac: [u8; 6],
    /// The address.
    pub addr: IpAddr,
}

/// A domain of the connection, as [`list_domains`] found it.
#[derive(Debug)]
pub struct DiscoveredDomain {
    /// The domain's name.
    pub name: String,
    /// Whether the selector takes it (with [`Selector::Metadata`]: whether it carries the
    /// element). Domains not taken are listed too, so that callers can say why.
    pub selected: bool,
    /// Its state.
    pub state: DomainState,
    /// Its network interfaces, from its live XML (taps only while it runs).
    pub interfaces: Vec<DomainInterface>,
    /// The settings of its metadata element (selected domains, [`Selector::Metadata`] only).
    pub metadata: Option<GuestMetadata>,
    /// The addresses libvirt's DHCP leases give it (selected running domains only; only
    /// interfaces on libvirt-managed networks have leases).
    pub leases: Vec<Lease>,
    /// Why the leases could not be read, if they could not.
    pub lease_error: Option<String>,
    /// Why the domain cannot be used (XML or metadata that vmnap cannot read), if so.
    pub error: Option<String>,
}

/// Every domain at `uri`, each with whether `selector` takes it and, for those it takes,
/// their interfaces, metadata settings and leased addresses.
pub fn list_domains(uri: &str, selector: &Selector) -> Result<Vec<DiscoveredDomain>, LibvirtError> {
    let conn = Connect::open(uri)?;
    list_with(&conn, uri, selector)
}

fn list_with(
    conn: &Connect,
    uri: &str,
    selector: &Selector,
) -> Result<Vec<DiscoveredDomain>, LibvirtError> {
    let domains = conn
        .list_all_domains()
        .map_err(|source| LibvirtError::Call {
            action: "list the domains of",
            domain: uri.to_owned(),
            source,
        })?;
    let mut out = Vec::with_capacity(domains.len());
    for d in domains {
        let Ok(name) = d.name() else { continue };
        out.push(describe(&d, name, selector));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn describe(d: &Domain, name: String, selector: &Selector) -> DiscoveredDomain {
    let mut found = DiscoveredDomain {
        name,
        selected: false,
        state: DomainState::Other(u32::MAX), // until read below
        interfaces: Vec::new(),
        metadata: None,
        leases: Vec::new(),
        lease_error: None,
        error: None,
    };
    match d.state() {
        Ok(s) => found.state = crate::state_of(s),
        Err(e) => found.error = Some(format!("cannot read its state: {e}")),
    }
    match selector {
        Selector::All => found.selected = true,
        Selector::Metadata(ns) => {
            // libvirt answers VIR_ERR_NO_DOMAIN_METADATA when the element is not there.
            if let Ok(xml) = d.metadata_element(ns) {
                found.selected = true;
                match parse_metadata(&xml) {
                    Ok(m) => found.metadata = Some(m),
                    Err(e) => found.error = Some(e.to_string()),
                }
            }
        }
    }
    if !found.selected {
        return found;
    }
    match d.xml_desc() {
        Ok(xml) => match parse_interfaces(&xml) {
            Ok(i) => found.interfaces = i,
            Err(e) => {
                found
                    .error
                    .get_or_insert(format!("cannot read its interfaces: {e}"));
            }
        },
        Err(e) => {
            found
                .error
                .get_or_insert(format!("cannot read its XML: {e}"));
        }
    }
    if found.state == DomainState::Running {
        match d.leased_addresses() {
            Ok(ifaces) => {
                for i in ifaces {
                    let Some(Ok(vmnap_wire::Mac(mac))) = i.hwaddr.as_deref().map(str::parse) else {
                        continue;
                    };
                    found.leases.extend(
                        i.addrs
                            .iter()
                            .filter_map(|(addr, _prefix)| addr.parse().ok())
                            .map(|addr| Lease { mac, addr }),
                    );
                }
            }
            Err(e) => found.lease_error = Some(e.to_string()),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_attributes_are_read_as_written() {
        let m = parse_metadata(
            r#"<vmnap:guest xmlns:vmnap="https://example.org/vmnap" mode="save"
                 wake_on="tcp/80  tcp/22" ipv4="198.18.0.40 198.18.0.41" idle_after="5m"
                 min_awake="10m" max_sleep="off" inhibit_file="/run/vmnap-inhibit"/>"#,
        )
        .expect("valid");
        assert_eq!(
            m,
            GuestMetadata {
                mode: Some("save".into()),
                wake_on: Some(vec!["tcp/80".into(), "tcp/22".into()]),
                ipv4: vec!["198.18.0.40".into(), "198.18.0.41".into()],
                idle_after: Some("5m".into()),
                min_awake: Some("10m".into()),
                max_sleep: Some("off".into()),
                inhibit_file: Some("/run/vmnap-inhibit".into()),
                ..GuestMetadata::default()
            }
        );
        let empty = parse_metadata(r#"<x:v xmlns:x="urn:x"/>"#).expect("valid");
        assert_eq!(empty, GuestMetadata::default());
        let none = parse_metadata(r#"<x:v xmlns:x="urn:x" answer=""/>"#).expect("valid");
        assert_eq!(none.answer, Some(vec![]), "an empty list answers nothing");
    }

    #[test]
    fn unknown_attributes_children_and_bad_xml_are_refused() {
        let e = parse_metadata(r#"<x:v xmlns:x="urn:x" wake-on="tcp/80"/>"#).unwrap_err();
        assert!(e.to_string().contains("unknown attribute `wake-on`"), "{e}");
        let e =
            parse_metadata(r#"<x:v xmlns:x="urn:x"><ipv4>198.18.0.1</ipv4></x:v>"#).unwrap_err();
        assert!(e.to_string().contains("child <ipv4>"), "{e}");
        assert!(matches!(
            parse_metadata("<x:v"),
            Err(MetadataError::Syntax(_))
        ));
    }
}
