# Stores, reads and deletes a key over gerdu's HTTP API with net/http.
# Usage: ruby examples/http/ruby.rb http://127.0.0.1:8080
require "net/http"
require "uri"

uri = URI("#{ARGV[0] || 'http://127.0.0.1:8080'}/cache/Hello")
Net::HTTP.start(uri.host, uri.port) do |http|
  r = http.request(Net::HTTP::Put.new(uri), "World")
  puts "PUT /cache/Hello -> #{r.code}"
  r = http.request(Net::HTTP::Get.new(uri))
  puts "GET /cache/Hello -> #{r.code} #{r.body}"
  r = http.request(Net::HTTP::Delete.new(uri))
  puts "DELETE /cache/Hello -> #{r.code}"
  r = http.request(Net::HTTP::Get.new(uri))
  puts "GET /cache/Hello -> #{r.code}"
end
