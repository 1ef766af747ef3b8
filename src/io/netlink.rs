//! Next hops from the kernel: links, addresses, routes and neighbours over rtnetlink.
