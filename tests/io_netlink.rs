//! rtnetlink dumps in a namespace return exactly what was configured there.

mod io_util;

use std::net::IpAddr;

use io_util::*;
use xvs::io::netlink::{Rtnl, resolve};
use xvs::types::Mac;

#[test]
fn dumps_return_configured_links_addresses_routes_neighbours() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let f = lab.f.as_str();
    sh(&["ip", "-n", f, "addr", "add", "2001:2:0:2::1/64", "dev", "f1", "nodad"]);
    sh(&["ip", "-n", f, "route", "add", "198.18.0.0/24", "via", "198.18.2.11"]);
    sh(&[
        "ip",
        "-n",
        f,
        "route",
        "add",
        "2001:2:0:9::/64",
        "via",
        "2001:2:0:2::11",
        "dev",
        "f1",
    ]);
    sh(&[
        "ip",
        "-n",
        f,
        "neigh",
        "replace",
        "198.18.2.12",
        "lladdr",
        "02:00:00:00:02:0c",
        "dev",
        "f1",
        "nud",
        "permanent",
    ]);
    in_ns(f, || {
        let mut nl = Rtnl::open().unwrap();
        let links = nl.links().unwrap();
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"lo") && names.contains(&"f0") && names.contains(&"f1"));
        let f1 = links.iter().find(|l| l.name == "f1").unwrap();
        assert_eq!(f1.mac, Some("02:00:00:00:02:01".parse::<Mac>().unwrap()));
        assert_eq!(f1.mtu, 1500);
        assert!(f1.up);
        assert_eq!(f1.rx_queues, 1);

        let addrs = nl.addrs().unwrap();
        let has = |a: &str, len: u8, ifindex: u32| {
            addrs
                .iter()
                .any(|x| x.addr == a.parse::<IpAddr>().unwrap() && x.prefix_len == len && x.ifindex == ifindex)
        };
        let f0 = links.iter().find(|l| l.name == "f0").unwrap().ifindex;
        assert!(has("198.18.1.1", 24, f0), "{addrs:?}");
        assert!(has("198.18.2.1", 24, f1.ifindex), "{addrs:?}");
        assert!(has("2001:2:0:2::1", 64, f1.ifindex), "{addrs:?}");

        let routes = nl.routes().unwrap();
        let r = routes
            .iter()
            .find(|r| r.dst == "198.18.0.0/24".parse().unwrap())
            .expect("v4 route");
        assert_eq!(r.gateway, Some("198.18.2.11".parse().unwrap()));
        assert_eq!(r.oif, Some(f1.ifindex));
        let c = routes
            .iter()
            .find(|r| r.dst == "198.18.1.0/24".parse().unwrap())
            .expect("connected route");
        assert_eq!((c.gateway, c.oif), (None, Some(f0)));
        let r6 = routes
            .iter()
            .find(|r| r.dst == "2001:2:0:9::/64".parse().unwrap())
            .expect("v6 route");
        assert_eq!(r6.gateway, Some("2001:2:0:2::11".parse().unwrap()));
        // Local-table routes (the box's own addresses) are not listed.
        assert!(!routes.iter().any(|r| r.dst == "198.18.1.1/32".parse().unwrap()));

        let n = nl.neighbours().unwrap();
        let e = n
            .iter()
            .find(|e| e.addr == "198.18.2.12".parse::<IpAddr>().unwrap())
            .expect("neigh");
        assert_eq!(e.mac, Some("02:00:00:00:02:0c".parse::<Mac>().unwrap()));
        assert_eq!(e.state, 0x80);
        assert_eq!(e.ifindex, f1.ifindex);

        // resolve() makes the kernel learn the server's MAC.
        resolve("198.18.2.11".parse().unwrap()).unwrap();
        let mut learned = None;
        for _ in 0..50 {
            learned = nl
                .neighbours()
                .unwrap()
                .into_iter()
                .find(|e| e.addr == "198.18.2.11".parse::<IpAddr>().unwrap() && e.mac.is_some());
            if learned.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            learned.and_then(|e| e.mac),
            Some("02:00:00:00:02:0b".parse::<Mac>().unwrap())
        );
    });
}
