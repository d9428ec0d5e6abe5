#!/usr/bin/perl
# The limopack sequence addon: "dh $@ --with limopack", or "dh-sequence-limopack" in
# Build-Depends, runs dh_limopack right after dh_install, in the arch and indep sequences alike.

use strict;
use warnings;
use Debian::Debhelper::Dh_Lib;

insert_after('dh_install', 'dh_limopack');

1;
