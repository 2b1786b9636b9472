# Stores, reads and deletes a key over gerdu's HTTP API with HTTP::Tiny (core).
# Usage: perl examples/http/perl.pl http://127.0.0.1:8080
use strict;
use warnings;
use HTTP::Tiny;

my $url = ($ARGV[0] // 'http://127.0.0.1:8080') . '/cache/Hello';
my $http = HTTP::Tiny->new;
my $r = $http->request('PUT', $url, { content => 'World' });
print "PUT /cache/Hello -> $r->{status}\n";
$r = $http->get($url);
print "GET /cache/Hello -> $r->{status} $r->{content}\n";
$r = $http->delete($url);
print "DELETE /cache/Hello -> $r->{status}\n";
$r = $http->get($url);
print "GET /cache/Hello -> $r->{status}\n";
