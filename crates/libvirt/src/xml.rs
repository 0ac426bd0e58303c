//! Reading a domain's network interfaces, and how its memory is backed, from its XML.

use roxmltree::Document;
use vmnap_wire::Mac;

/// A network interface of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInterface {
    /// `<mac address=...>`.
    pub mac: [u8; 6],
    /// `<source bridge=...>` (for `type='bridge'`) or `<source network=...>`'s name (for
    /// `type='network'`; vmnap needs the bridge, which the network defines).
    pub bridge: Option<String>,
    /// `<target dev=...>`: the tap on the host, present while the domain runs.
    pub tap: Option<String>,
}

/// The XML is not a domain description vmnap can use.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("not well-formed XML")]
    Syntax(#[source] roxmltree::Error),
    /// An interface without a MAC, or with one that does not parse.
    #[error("interface {index} has no valid <mac address=...>")]
    Mac {
        /// Its position among the domain's interfaces.
        index: usize,
    },
}

/// The interfaces of the domain described by `xml`, in document order.
pub fn parse_interfaces(xml: &str) -> Result<Vec<DomainInterface>, XmlError> {
    let doc = Document::parse(xml).map_err(XmlError::Syntax)?;
    let mut out = Vec::new();
    let devices = doc.descendants().filter(|n| n.has_tag_name("devices"));
    for (index, iface) in devices
        .flat_map(|d| d.children())
        .filter(|n| n.has_tag_name("interface"))
        .enumerate()
    {
        let child = |tag: &str| iface.children().find(|n| n.has_tag_name(tag));
        let mac = child("mac")
            .and_then(|n| n.attribute("address"))
            .and_then(|a| a.parse::<Mac>().ok())
            .map(|m| m.0)
            .ok_or(XmlError::Mac { index })?;
        let bridge = child("source")
            .and_then(|n| n.attribute("bridge"))
            .map(str::to_owned);
        let tap = child("target")
            .and_then(|n| n.attribute("dev"))
            .map(str::to_owned);
        out.push(DomainInterface { mac, bridge, tap });
    }
    Ok(out)
}

/// How a domain's memory is backed (`<memoryBacking>`, and `<numa>` cells' `memAccess`):
/// page-out sleep needs a file mapped shared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryBacking {
    /// `<source type=...>`: `file`, `anonymous`, `memfd`; `None` when not given (anonymous).
    pub source: Option<String>,
    /// `<access mode='shared'/>`, or `memAccess='shared'` on every NUMA cell.
    pub shared: bool,
}

impl MemoryBacking {
    /// Whether the domain's RAM is a file mapped shared, as page-out sleep needs.
    pub fn is_file_shared(&self) -> bool {
        self.source.as_deref() == Some("file") && self.shared
    }
}

/// How the memory of the domain described by `xml` is backed.
pub fn parse_memory_backing(xml: &str) -> Result<MemoryBacking, XmlError> {
    let doc = Document::parse(xml).map_err(XmlError::Syntax)?;
    let root = doc.root_element();
    let backing = root.children().find(|n| n.has_tag_name("memoryBacking"));
    let child = |tag: &str| backing.and_then(|b| b.children().find(|n| n.has_tag_name(tag)));
    let source = child("source")
        .and_then(|n| n.attribute("type"))
        .map(str::to_owned);
    let access = child("access").and_then(|n| n.attribute("mode")) == Some("shared");
    let cells: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("cpu"))
        .flat_map(|c| c.children().filter(|n| n.has_tag_name("numa")))
        .flat_map(|n| n.children().filter(|c| c.has_tag_name("cell")))
        .collect();
    let cells_shared = !cells.is_empty()
        && cells
            .iter()
            .all(|c| c.attribute("memAccess") == Some("shared"));
    Ok(MemoryBacking {
        source,
        shared: access || cells_shared,
    })
}

/// Whether a domain's XML has a channel for a guest agent: a `virtio` target named
/// `org.qemu.guest_agent.0`.
pub fn has_guest_agent(xml: &str) -> Result<bool, XmlError> {
    let doc = Document::parse(xml).map_err(XmlError::Syntax)?;
    Ok(doc.descendants().any(|n| {
        n.has_tag_name("channel")
            && n.children().any(|t| {
                t.has_tag_name("target") && t.attribute("name") == Some("org.qemu.guest_agent.0")
            })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = r#"<domain type='qemu' id='3'>
  <name>web2</name>
  <devices>
    <disk type='file' device='disk'><target dev='vda'/></disk>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>"#;

    #[test]
    fn running_domain_has_mac_bridge_and_tap() {
        let ifaces = parse_interfaces(RUNNING).expect("valid");
        assert_eq!(
            ifaces,
            [DomainInterface {
                mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                bridge: Some("br0".into()),
                tap: Some("vnet3".into()),
            }]
        );
    }

    #[test]
    fn shut_off_domain_has_no_tap() {
        let xml = RUNNING.replace("<target dev='vnet3'/>", "");
        let ifaces = parse_interfaces(&xml).expect("valid");
        assert_eq!(ifaces[0].tap, None);
    }

    #[test]
    fn bad_mac_and_bad_xml_are_refused() {
        let xml = RUNNING.replace("52:54:00:12:34:56", "52:54:00:12:34");
        assert!(matches!(
            parse_interfaces(&xml),
            Err(XmlError::Mac { index: 0 })
        ));
        assert!(matches!(
            parse_interfaces("<domain>"),
            Err(XmlError::Syntax(_))
        ));
    }

    #[test]
    fn memory_backing_says_whether_ram_is_a_file_mapped_shared() {
        let backed = |inner: &str| {
            parse_memory_backing(&format!(
                "<domain type='kvm'><name>d</name>{inner}</domain>"
            ))
            .expect("parses")
        };
        assert!(backed(
            "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>"
        )
        .is_file_shared());
        assert!(backed(
            "<memoryBacking><source type='file'/></memoryBacking><cpu><numa>\
             <cell id='0' memory='1' memAccess='shared'/></numa></cpu>"
        )
        .is_file_shared());
        let private = backed("<memoryBacking><source type='file'/></memoryBacking>");
        assert_eq!(
            (private.source.as_deref(), private.shared),
            (Some("file"), false)
        );
        let memfd =
            backed("<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>");
        assert!(!memfd.is_file_shared() && memfd.shared);
        assert_eq!(backed(""), MemoryBacking::default());
        assert!(parse_memory_backing("<domain").is_err());
    }

    #[test]
    fn target_of_a_disk_is_not_taken_for_a_tap() {
        let xml = RUNNING.replace("<target dev='vnet3'/>", "");
        assert!(parse_interfaces(&xml)
            .expect("valid")
            .iter()
            .all(|i| i.tap.is_none()));
    }
}
