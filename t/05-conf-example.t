#!/usr/bin/perl
# nginx.conf.example stays true to the code: with its file paths pointed at
# temporary files, `nginx -t` accepts it with the module just built.
use strict;
use warnings;
use FindBin;
use File::Temp qw(tempdir);
use Test::More;

my $root = "$FindBin::Bin/..";
my $build = $ENV{FLEET_BUILD} // "$root/build";
my $d = tempdir(CLEANUP => 1);

system("openssl req -x509 -newkey rsa:2048 -nodes -keyout $d/k.pem -out $d/c.pem -days 1 -subj /CN=fleet >/dev/null 2>&1") == 0
    or BAIL_OUT('openssl cannot make a test certificate');
open my $fh, '>', "$d/jwt.secret" or die; print $fh 'x' x 40, "\n"; close $fh;
open $fh, '>', "$d/device.secret" or die; print $fh "modernchabackdoor\n"; close $fh;
open $fh, '>', "$d/webhook.secret" or die; print $fh "whsec-0123456789abcdef\n"; close $fh;

open $fh, '<', "$root/nginx.conf.example" or die "nginx.conf.example: $!";
my $conf = do { local $/; <$fh> };
close $fh;

$conf =~ s{load_module modules/ngx_fleet_module\.so;}
          {load_module $build/nginx/objs/ngx_fleet_module.so;\nerror_log $d/error.log;\npid $d/nginx.pid;}
    or fail('the example loads the module');
$conf =~ s{/etc/fleetgate/jwt\.secret}{$d/jwt.secret};
$conf =~ s{/etc/fleetgate/device\.secret}{$d/device.secret};
$conf =~ s{/etc/fleetgate/payment-webhook\.secret}{$d/webhook.secret};
$conf =~ s{/etc/ssl/fleet\.crt}{$d/c.pem};
$conf =~ s{/etc/ssl/fleet\.key}{$d/k.pem};
$conf =~ s{listen 443 ssl;}{listen 127.0.0.1:1 ssl;};
$conf =~ s{(http \{)}{$1\n    client_body_temp_path $d/body; proxy_temp_path $d/proxy;\n    fastcgi_temp_path $d/fcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;\n    access_log $d/access.log;};

open $fh, '>', "$d/nginx.conf" or die; print $fh $conf; close $fh;

# a sanitized module needs the ASan runtime preloaded, as in the harness
my $pre = $ENV{FLEET_NGINX_PRELOAD} ? "LD_PRELOAD=$ENV{FLEET_NGINX_PRELOAD} " : '';
my $out = qx{${pre}/usr/sbin/nginx -t -p $d/ -c $d/nginx.conf -e $d/error.log 2>&1};
is $?, 0, 'nginx -t accepts nginx.conf.example' or diag $out;

# every directive the module defines is shown in the example
open $fh, '<', "$root/ngx_module/ngx_fleet_module.c" or die;
my $src = do { local $/; <$fh> };
close $fh;
my @directives = $src =~ /ngx_string\("(fleet_[a-z_]+)"\)/g;
ok scalar(@directives) > 10, scalar(@directives) . ' directives in the module';
for my $dname (@directives) {
    like $conf, qr/\b\Q$dname\E\b/, "nginx.conf.example shows $dname";
}

done_testing;
